"""The study beside the library: the source paper's tables, the whole reproduction (``reproduce``) and its report.

The library below (data, models, training, distillation, evaluation, deployment, experiments) knows nothing
of the paper; this package puts the paper's figures beside what the library measures."""

from cxrdistill.exports import lazy_exports

__all__ = ["beside_table_1", "paper_rows", "paper_tables", "paper_temperatures", "reproduce", "write_report"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "tables": ("beside_table_1", "paper_rows", "paper_tables", "paper_temperatures"),
    "reproduce": ("reproduce",),
    "report.study": ("write_report",),
})
