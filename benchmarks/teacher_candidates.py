"""Which teacher knows most about new patients: trained checkpoints and their ensembles, scored on external folders.

A student can only learn from its teacher what the teacher knows, so a candidate teacher is worth distilling
from when it beats the plain student on patients neither trained on. Each ``--member`` is scored alone; each
``--ensemble`` as the mean of its members' probabilities (at T = 1, exactly the soft target an ensemble
``distill.teacher`` gives, :func:`cxrdistill.distillation.teacher.mean_probability_logits`). Every checkpoint
reads the images with its own recorded preprocessing. Metrics at 0.5 with 95 % patient-bootstrap intervals.

    python benchmarks/teacher_candidates.py --external ../shared/data/kermany_test_half_a \
        --member effnet=runs/whole/teacher_effnet-s0/best.safetensors \
        --member plain-s0=runs/whole/student-s0/last.safetensors ... \
        --ensemble all=effnet+inception+plain-s0+plain-s1+plain-s2 --out benchmarks/results/whole-split/teachers
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from cxrdistill.data.audit import external_records
from cxrdistill.distillation.teacher import mean_probability_logits
from cxrdistill.evaluation.evaluate import local_data_config, predict_records
from cxrdistill.evaluation.metrics import bootstrap_metrics
from cxrdistill.evaluation.tables import write_table
from cxrdistill.runtime.checkpoint import model_from_checkpoint

REPORTED = ("accuracy", "sensitivity", "specificity", "roc_auc")


def named(pairs: list[str], flag: str) -> dict[str, str]:
    parsed = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if len(parsed) != len(pairs):
        raise SystemExit(f"{flag} takes NAME=VALUE, got {pairs}")
    return parsed


def member_logits(checkpoint: str, records: list) -> tuple[np.ndarray, np.ndarray]:
    """Labels and raw logits (what a cached teacher stores) of one checkpoint over ``records``, read with its own
    preprocessing."""
    model, metadata = model_from_checkpoint(checkpoint)
    kept, scored = predict_records(model, metadata, local_data_config(metadata), records, progress=False)
    if len(kept) != len(records):
        raise SystemExit(f"{len(records) - len(kept)} unreadable image(s): every member must score the same films")
    return scored.labels, scored.logits


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--external", action="append", required=True, help="external folder (repeatable)")
    options.add_argument("--member", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    options.add_argument("--ensemble", action="append", default=[], help="NAME=MEMBER+MEMBER+... (repeatable)")
    options.add_argument("--out", type=Path, required=True)
    options.add_argument("--bootstrap", type=int, default=1000)
    args = options.parse_args(argv)
    members = named(args.member, "--member")
    ensembles = {name: spec.split("+") for name, spec in named(args.ensemble, "--ensemble").items()}
    unknown = {m for spec in ensembles.values() for m in spec} - set(members)
    if unknown:
        raise SystemExit(f"--ensemble names members that no --member defines: {sorted(unknown)}")
    rows = []
    for folder, records in external_records(args.external).items():
        scored = {name: member_logits(path, records) for name, path in members.items()}
        labels = next(iter(scored.values()))[0]
        patients = [r.patient for r in records]
        candidates = {name: torch.from_numpy(logits) for name, (_, logits) in scored.items()}
        candidates |= {name: mean_probability_logits([candidates[m] for m in spec], 1.0)
                       for name, spec in ensembles.items()}
        for name, logits in candidates.items():
            probability = torch.softmax(logits.float(), dim=1)[:, 1].numpy()
            estimates = bootstrap_metrics(labels, probability, 0.5, args.bootstrap, groups=patients)
            rows.append({"set": folder, "candidate": name, "members": "+".join(ensembles.get(name, [name])),
                         **{metric: estimates[metric] for metric in REPORTED}})
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(rows, args.out, "teacher-candidates",
                "Teacher candidates at 0.5 (ensembles: mean of member probabilities), 95 % patient-bootstrap intervals")
    command = shlex.join(["python", "benchmarks/teacher_candidates.py", *(sys.argv[1:] if argv is None else argv)])
    (args.out / "command.txt").write_text(command + "\n")
    print((args.out / "teacher-candidates.md").read_text())


if __name__ == "__main__":
    main()
