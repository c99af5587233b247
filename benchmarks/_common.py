"""Plumbing shared by the benchmark scripts: options, ratios with intervals, verdicts and result files.

Every benchmark times a baseline and the project's path in the same run, interleaved round by round
(on shared, noisy machines only a same-run ratio means anything), and reports each ratio as its mean
over rounds (geometric) with a 95 % interval. ``results/<name>.json`` carries the provenance (command,
config, git commit, date, machine, versions) beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from cxrdistill.provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
CONFIDENCE = 0.95


def parser(description: str) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(description=description)
    options.add_argument("--quick", action="store_true", help="a smoke run of a few seconds; numbers mean little")
    options.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json is written")
    options.add_argument("--threads", type=int, default=None,
                         help="torch intra-op threads (default: torch's own choice, one per core)")
    return options


def parse(options: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parse the command line (kept for the JSON) and fix the thread count before anything is timed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = options.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args, argv


def ratio_interval(per_round: Sequence[float]) -> dict[str, Any]:
    """Geometric mean of per-round ratios with a 95 % interval (Student t on the log ratios, so it stays positive).

    ``low``/``high`` are None with a single round: there is no spread to go on.
    """
    logs = [math.log(float(v)) for v in per_round]
    centre = statistics.fmean(logs)
    low = high = None
    if len(logs) > 1:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        low, high = math.exp(centre - half), math.exp(centre + half)
    return {"mean": math.exp(centre), "low": low, "high": high, "rounds": len(logs),
            "per_round": [float(v) for v in per_round]}


def describe(ratio: dict[str, Any]) -> str:
    """``1.234x [1.100, 1.368] over 6 rounds``, for printing."""
    if ratio["low"] is None:
        return f"{ratio['mean']:.3f}x (1 round, no interval)"
    return f"{ratio['mean']:.3f}x [{ratio['low']:.3f}, {ratio['high']:.3f}] over {ratio['rounds']} rounds"


def check(name: str, ratio: dict[str, Any], target: float, at_least: bool = True) -> dict[str, Any]:
    """A ratio against its target; met only when the whole 95 % interval is on the right side of it.

    With a single round (``--quick``) there is no interval and the mean decides.
    """
    bound = ratio["mean"] if ratio["low"] is None else (ratio["low"] if at_least else ratio["high"])
    met = bound >= target if at_least else bound <= target
    sign = ">=" if at_least else "<="
    print(f"{name}: {describe(ratio)} (target {sign} {target}x for the whole interval) -> "
          f"{'MET' if met else 'NOT MET'}")
    return {"ratio": round(ratio["mean"], 4), "interval_95": [ratio["low"], ratio["high"]],
            "target": f"{sign} {target}", "met": met}


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_result(name: str, script: str, argv: list[str], args: argparse.Namespace, settings: dict[str, Any],
                 payload: dict[str, Any]) -> Path:
    """``results/<name>.json``: provenance (command, config = arguments + settings, commit, machine, versions)
    and the measurements."""
    script_path = Path(script).resolve()
    shown = script_path.relative_to(REPO) if script_path.is_relative_to(REPO) else script_path
    arguments = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    record = {
        "benchmark": name,
        "quick": args.quick,
        **provenance([str(shown), *argv], {"arguments": arguments, **settings}),
        **payload,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
