"""Recipes compared over seeds from finished run folders: mean and spread per recipe, paired differences.

``cxrdistill compare`` trains its arms itself; this script reads runs trained one by one (a study queued
over several sessions, each run resumable) from folders named ``{ARM}-s{SEED}``, and tabulates them with the
same code: each run's point metrics from its ``evaluation.json`` (internal test split and every external
set, at 0.5 and at the threshold chosen on val), mean and standard deviation over seeds, and the paired
difference of two recipes with a Student-t 95 % interval over the seeds both have.

    python benchmarks/seed_study.py --runs runs/whole --arm plain=student --arm cropped=student_crop10 \
        --difference cropped:plain --out benchmarks/results/whole-split/seeds
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cxrdistill.evaluation.evaluate import RUN_EVALUATION_FILE
from cxrdistill.experiments.compare import Comparison, paired_differences, run_rows, summarize, write_results

RUN_NAME = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")


def finished_runs(runs: Path, prefix: str) -> dict[int, Path]:
    """Seed -> handed-on checkpoint of every evaluated run ``{prefix}-s{seed}`` under ``runs``."""
    found = {}
    for folder in sorted(runs.iterdir()):
        match = RUN_NAME.match(folder.name)
        evaluation = folder / RUN_EVALUATION_FILE
        if match and match["arm"] == prefix and evaluation.is_file():
            found[int(match["seed"])] = folder / Path(json.loads(evaluation.read_text())["checkpoint"]).name
    return found


def main(argv: list[str] | None = None) -> Comparison:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--runs", type=Path, required=True, help="folder holding the {ARM}-s{SEED} run folders")
    options.add_argument("--arm", action="append", required=True, metavar="NAME=PREFIX",
                         help="a recipe and the run-name prefix of its runs (repeatable)")
    options.add_argument("--difference", action="append", default=[], metavar="BETTER:BASELINE",
                         help="a paired difference to report (repeatable)")
    options.add_argument("--out", type=Path, required=True)
    args = options.parse_args(argv)
    arms = dict(arm.split("=", 1) for arm in args.arm)
    result = Comparison()
    for name, prefix in arms.items():
        runs = finished_runs(args.runs, prefix)
        if not runs:
            raise SystemExit(f"no evaluated run {prefix}-s<N> under {args.runs}")
        print(f"{name}: seeds {sorted(runs)}")
        result.runs += [{"arm": name, "seed": seed, **row} for seed, best in runs.items() for row in run_rows(best)]
    result.summary = summarize(result.runs, list(arms))
    for pair in args.difference:
        better, baseline = pair.split(":", 1)
        result.difference += paired_differences(result.runs, better, baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(result, args.out, args.runs, "seeds")
    (args.out / "command.txt").write_text(
        "python benchmarks/seed_study.py " + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
    return result


if __name__ == "__main__":
    main()
