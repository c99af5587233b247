"""The source paper's tables, read from ``data/paper_tables.yaml`` (the one place they are transcribed)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PAPER_TABLES = Path(str(resources.files("cxrdistill.data").joinpath("paper_tables.yaml")))


@cache
def paper_tables(path: Path = PAPER_TABLES) -> dict[str, Any]:
    """``{"table_1": {"title", "units", "rows": {row: {column: value}}}, ...}`` as printed in the paper."""
    return yaml.safe_load(Path(path).read_text())


def paper_rows(table: str) -> dict[Any, dict[str, float]]:
    return paper_tables()[table]["rows"]
