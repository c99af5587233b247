"""Result tables: estimates spread over CSV columns, shown as intervals in Markdown, files written atomically."""

import csv

import pytest

from cxrdistill.evaluation.metrics import MetricEstimate
from cxrdistill.evaluation.tables import write_table


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot be written")


def test_estimates_become_three_csv_columns_and_one_markdown_cell(tmp_path):
    write_table([{"set": "test", "accuracy": MetricEstimate(0.9, 0.8, 0.95)}], tmp_path, "t", "Title")
    with open(tmp_path / "t.csv") as stream:
        assert list(csv.DictReader(stream)) == [
            {"set": "test", "accuracy": "0.9", "accuracy_low": "0.8", "accuracy_high": "0.95"}]
    assert "| test | 0.9000 [0.8000, 0.9500] |" in (tmp_path / "t.md").read_text()


def test_a_failed_write_leaves_the_previous_table_intact(tmp_path):
    write_table([{"temperature": 1.0, "accuracy": 0.9}], tmp_path, "sweep", "Sweep")
    before = {name: (tmp_path / name).read_text() for name in ("sweep.csv", "sweep.md")}
    rows = [{"temperature": 3.0, "accuracy": 0.5}, {"temperature": 4.0, "accuracy": Unprintable()}]
    with pytest.raises(RuntimeError, match="cannot be written"):
        write_table(rows, tmp_path, "sweep", "Sweep")
    assert {name: (tmp_path / name).read_text() for name in before} == before
