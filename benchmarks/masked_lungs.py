"""Masked-lung check of trained checkpoints: metrics with the lung field hidden, and with all but it hidden.

For each checkpoint and each set (the run's internal test split, each external folder) the checkpoint is
evaluated three times through ``evaluate_checkpoint``: as it is, with ``--mask lungs`` and with
``--mask outside-lungs``. A model that still ranks the classes well without the lungs decides from outside
them. Writes ``masked_lungs.{json,md}`` to ``--out``; per-evaluation files go beside each checkpoint.

    python benchmarks/masked_lungs.py RUN/last.safetensors ... --data ROOT --external DIR --out DIR
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

from cxrdistill.evaluation.evaluate import evaluate_checkpoint
from cxrdistill.evaluation.masking import MASKS
from cxrdistill.evaluation.tables import write_table
from cxrdistill.files import atomic_write_json

METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")


def model_name(checkpoint: Path) -> str:
    """``RUNS/whole/student-s0/last.safetensors`` -> ``whole/student-s0/last``: names the run, not the machine."""
    return "/".join([*checkpoint.parent.parts[-2:], checkpoint.stem])


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("checkpoints", nargs="+", type=Path)
    options.add_argument("--data", type=Path, required=True, help="the training root (its test split is used)")
    options.add_argument("--external", type=Path, action="append", default=[], help="external folder (repeatable)")
    options.add_argument("--bootstrap", type=int, default=1000)
    options.add_argument("--out", type=Path, required=True)
    args = options.parse_args(argv)
    sets = {"test": args.data, **{folder.name: folder for folder in args.external}}
    rows = []
    for checkpoint in args.checkpoints:
        for set_name, data in sets.items():
            for mask in (None, *MASKS.names()):
                report = evaluate_checkpoint(checkpoint, data, "test", n_bootstrap=args.bootstrap, progress=False,
                                             mask=mask)
                rows.append({"model": model_name(checkpoint), "set": set_name, "mask": mask or "none",
                             "images": report.count, **{m: report.metrics[m] for m in METRICS}})
                print(rows[-1]["model"], set_name, mask, f"AUC {report.metrics['roc_auc'].value:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "masked_lungs.json", {
        "command": "python benchmarks/masked_lungs.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": [{k: asdict(v) if is_dataclass(v) else v for k, v in row.items()} for row in rows]})
    write_table(rows, args.out, "masked_lungs",
                "Masked-lung check: metrics at 0.5 with 95 % patient-bootstrap intervals "
                "(lungs: the central lung field hidden; outside-lungs: all but it hidden)")


if __name__ == "__main__":
    main()
