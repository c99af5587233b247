"""The study beside the library: the source paper's tables, the whole reproduction (``reproduce``) and its report.

The library below (data, models, training, distillation, evaluation, deployment, experiments) knows nothing
of the paper; this package puts the paper's figures beside what the library measures.
"""

from cxrdistill.paper.tables import beside_table_1, paper_rows, paper_tables, paper_temperatures

__all__ = ["beside_table_1", "paper_rows", "paper_tables", "paper_temperatures"]
