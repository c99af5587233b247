"""Plumbing shared by the benchmark scripts: options, the machine description, verdicts and result files.

Every benchmark times a baseline and the project's path in the same run (on shared, noisy machines only
a same-run ratio means anything) and writes ``results/<name>.json`` with the machine and the exact
command beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from cxrdistill.deployment.profile import describe_machine

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


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


def check(name: str, ratio: float, target: float, at_least: bool = True) -> dict[str, Any]:
    """A ratio against its target, printed as one line and returned for the JSON."""
    met = ratio >= target if at_least else ratio <= target
    sign = ">=" if at_least else "<="
    print(f"{name}: {ratio:.3f}x (target {sign} {target}x) -> {'MET' if met else 'NOT MET'}")
    return {"ratio": round(ratio, 4), "target": f"{sign} {target}", "met": met}


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_result(name: str, script: str, argv: list[str], args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    """``results/<name>.json``: the command, the machine (load average included) and the measurements."""
    script_path = Path(script).resolve()
    shown = script_path.relative_to(REPO) if script_path.is_relative_to(REPO) else script_path
    record = {
        "benchmark": name,
        "command": shlex.join([sys.executable, str(shown), *argv]),
        "quick": args.quick,
        "machine": describe_machine(),
        **payload,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
