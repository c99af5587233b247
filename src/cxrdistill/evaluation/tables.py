"""Result tables written as CSV (for tools) and Markdown (for people), both atomically.

A cell may hold a :class:`MetricEstimate`: the CSV spreads it over three numeric columns (``name``,
``name_low``, ``name_high``), the Markdown shows it as ``value [low, high]``. NaN marks an undefined
figure (the std of a single run, the interval of a single pair) and is written as a blank cell.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from cxrdistill.evaluation.metrics import MetricEstimate
from cxrdistill.files import atomic_write_text


def is_undefined(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def markdown_cell(value: object) -> str:
    if isinstance(value, MetricEstimate):
        if is_undefined(value.low):
            return markdown_cell(value.value)
        return f"{value.value:.4f} [{value.low:.4f}, {value.high:.4f}]"
    if is_undefined(value):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flat_row(row: dict) -> dict:
    """A row with every :class:`MetricEstimate` spread into value, ``_low`` and ``_high`` columns."""
    flat: dict = {}
    for name, value in row.items():
        if isinstance(value, MetricEstimate):
            flat.update({name: value.value, f"{name}_low": value.low, f"{name}_high": value.high})
        else:
            flat[name] = value
    return flat


def write_table(rows: list[dict], out: Path, stem: str, title: str) -> None:
    """``out/{stem}.csv`` and ``out/{stem}.md``; columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    flat = [flat_row(row) for row in rows]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in flat for key in row)))
    writer.writeheader()
    writer.writerows({k: "" if is_undefined(v) else v for k, v in row.items()} for row in flat)
    atomic_write_text(out / f"{stem}.csv", buffer.getvalue())
    atomic_write_text(out / f"{stem}.md", f"# {title}\n\n" + markdown_table(rows, columns))
