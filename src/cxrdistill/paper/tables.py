"""The source paper's tables, read from ``paper/tables.yaml`` (the one place they are transcribed).

The library knows nothing of them: the study (``reproduce`` and its report) and ``cxrdistill models``
put them beside what we measure.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PAPER_TABLES = Path(str(resources.files("cxrdistill.paper").joinpath("tables.yaml")))


@cache
def paper_tables(path: Path = PAPER_TABLES) -> dict[str, Any]:
    """``{"table_1": {"title", "units", "rows": {row: {column: value}}}, ...}`` as printed in the paper."""
    return yaml.safe_load(Path(path).read_text())


def paper_rows(table: str) -> dict[Any, dict[str, float]]:
    """One table's rows, ``{row: {column: value}}``, in the paper's units."""
    return paper_tables()[table]["rows"]


def paper_temperatures() -> tuple[float, ...]:
    """The temperatures of the paper's Table II (1, 10, ..., 50): the study's default sweep."""
    return tuple(float(temperature) for temperature in paper_rows("table_2"))


def beside_table_1(summary: dict[str, Any]) -> dict[str, Any]:
    """A measured model summary with the paper's Table I figures added (``None`` for a model it does not list)."""
    row = paper_rows("table_1").get(summary["name"], {})
    return {**summary, "paper_params_m": row.get("params"), "paper_depth": row.get("depth"),
            "paper_computation_m": row.get("computation")}
