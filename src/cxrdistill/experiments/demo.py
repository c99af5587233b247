"""The main job, offline: a teacher, and a student trained alone and distilled from it over a few seeds.

Without ``--data`` it unpacks the small sample of real Kermany films bundled with the package
(:mod:`cxrdistill.data.sample`: a few hundred 96-px grey images, split by patient into train and
test) and trains the ``demo/`` students on it, three seeds each, in a few CPU-minutes. A teacher
stronger than its students cannot be bought in that time from a few hundred images, so the sample
ships one's knowledge instead: the logits of an ImageNet EfficientNet-Lite0 fine-tuned on the rest of
the Kermany train folder, none of the sample's patients among its films
(``data/sample/teacher-soft-targets.json``, made by ``scripts/make_sample_teacher.py``). The table
says so, scores that teacher on the same test films, and gives the paired distilled - plain
difference with its 95 % interval over the seeds.

With ``--data`` the teacher is trained first (the ``cpu/`` presets) on the user's data;
``synthetic=True`` runs the same on a SYNTHETIC set (no real X-rays), which the tests use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cxrdistill.config import ExperimentConfig, ModelConfig, preset
from cxrdistill.data.sample import SAMPLE_ARCHIVE, SAMPLE_SOFT_TARGETS, extract_sample
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.distillation.soft_targets import read_soft_targets
from cxrdistill.evaluation.evaluate import load_run_evaluation
from cxrdistill.evaluation.metrics import binary_metrics, summarize_runs
from cxrdistill.evaluation.tables import write_table
from cxrdistill.experiments.compare import paired_interval
from cxrdistill.experiments.run import handed_on_checkpoint, train_or_resume
from cxrdistill.models.summary import count_flops, summarize
from cxrdistill.runtime.checkpoint import model_from_checkpoint

DEMO_SYNTH = SynthSpec(normal_patients=200, pneumonia_patients=300, seed=0)
"""About 1,000 images: enough optimiser steps for from-scratch CPU presets to leave the 50 % plateau."""
PRESETS = {"sample": "demo", "synthetic": "cpu", "data": "cpu"}
"""Preset folder per data source: the bundled sample gets presets sized to it."""
SEEDS = {"sample": (0, 1, 2), "synthetic": (0,), "data": (0,)}
"""Student seeds per data source: on the sample a student takes about a minute, so the spread is affordable."""
REPORTED = ("accuracy", "sensitivity", "specificity", "roc_auc")
STUDENTS = {"student": "trained alone", "student_kd": "distilled"}


def demo_configs(root: Path, out: Path, extra: list[str] | None = None, presets: str = "cpu",
                 seeds: tuple[int, ...] = (0,), teacher: Path | None = None) -> dict[str, ExperimentConfig]:
    """Configs by run name: ``teacher`` (unless ``teacher`` names soft targets or a checkpoint to distil from),
    then ``student-sN`` and ``student_kd-sN`` per seed."""
    common = [f"output_dir={out}", f"data.root={root}", f"data.cache_dir={out / 'cache'}", *(extra or [])]
    configs = {}
    if teacher is None:
        configs["teacher"] = preset(f"{presets}/teacher", [*common, "name=teacher"])
        teacher = handed_on_checkpoint(configs["teacher"])
    for seed in seeds:
        for role in STUDENTS:
            name = f"{role}-s{seed}"
            configs[name] = preset(f"{presets}/{role}", [*common, f"name={name}", f"train.seed={seed}"])
            if role == "student_kd":
                configs[name].distill.teacher = str(teacher)
    return configs


def demo_data(data: Path | None, out: Path, synthetic: bool, progress: bool) -> tuple[Path, str]:
    """The data root to train on and which kind it is (``data``, ``sample`` or ``synthetic``)."""
    if data is not None:
        return Path(data), "data"
    if synthetic:
        root = out / "synthetic-data"
        if progress:
            print(f"Writing a SYNTHETIC data set to {root} (not real X-rays; results say nothing clinical).")
        make_synthetic_dataset(root, DEMO_SYNTH)
        return root, "synthetic"
    root = extract_sample(out / "sample-data")
    if progress:
        print(f"Real chest X-rays: the bundled Kermany sample ({SAMPLE_ARCHIVE.name}) unpacked to {root}.")
    return root, "sample"


def run_demo(data: Path | None, out: Path, progress: bool = True, extra: list[str] | None = None,
             synthetic: bool = False, seeds: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """Train the runs and score each on the held-out test split: a row for the teacher, one per student (mean
    and spread over seeds), and the paired distilled - plain difference.

    Every row says where its numbers come from: the split, its images and patients, and the threshold. The
    table is also written to ``out/demo.{md,csv}``.
    """
    out = Path(out)
    root, kind = demo_data(data, out, synthetic, progress)
    seeds = SEEDS[kind] if seeds is None else tuple(seeds)
    shipped = SAMPLE_SOFT_TARGETS if kind == "sample" else None
    configs = demo_configs(root, out, extra, PRESETS[kind], seeds, shipped)
    scored: dict[str, dict[str, float]] = {}
    for name, config in configs.items():
        if progress:
            print(f"== {name}: {config.model.name} at {config.data.image_size}px"
                  + (" (distilled)" if config.distill.teacher else ""))
        final = train_or_resume(config, progress)
        # Training already scored the handed-on checkpoint on the test split (evaluation.json, at 0.5 and at the
        # threshold chosen on val); scoring it again here cost about 8 s of CPU per model (2026-11-29).
        test = load_run_evaluation(final)["test"]
        model, metadata = model_from_checkpoint(final)
        scored[name] = {
            **{metric: estimate.value for metric, estimate in test.results[0].metrics.items()},
            "arch": metadata["architecture"], **size_figures(model, int(metadata["input_size"])),
            "split": "test", "images": test.count, "patients": test.patients, "threshold": test.results[0].threshold,
        }
    student = scored[f"student-s{seeds[0]}"]
    teacher = scored["teacher"] if shipped is None else shipped_teacher_row(shipped, student["threshold"])
    about = {key: student[key] for key in ("split", "images", "patients", "threshold")}
    rows = [{"model": "teacher", "arch": teacher["arch"], "how": teacher.get("how", "trained here"), "seeds": 1,
             **{metric: teacher[metric] for metric in REPORTED}, "accuracy sd": float("nan"),
             "params M": teacher["params M"], "GFLOPs": teacher["GFLOPs"]}]
    for role, how in STUDENTS.items():
        runs = [scored[f"{role}-s{seed}"] for seed in seeds]
        rows.append({"model": role, "arch": runs[0]["arch"], "how": how, "seeds": len(seeds),
                     **{metric: summarize_runs([r[metric] for r in runs])[0] for metric in REPORTED},
                     "accuracy sd": summarize_runs([r["accuracy"] for r in runs])[1],
                     "params M": runs[0]["params M"], "GFLOPs": runs[0]["GFLOPs"]})
    paired = {metric: paired_interval([scored[f"student_kd-s{s}"][metric] for s in seeds],
                                      [scored[f"student-s{s}"][metric] for s in seeds], bound=1.0)
              for metric in REPORTED}
    rows.append({"model": "distilled - plain", "arch": "", "how": "paired by seed, 95% CI", "seeds": len(seeds),
                 **paired, "accuracy sd": float("nan"), "params M": float("nan"), "GFLOPs": float("nan")})
    rows = [{**row, "data": kind, **about} for row in rows]
    write_table(rows, out, "demo", f"Demo on {kind} data: held-out {about['split']} split, {about['images']} images "
                f"of {about['patients']} patients, threshold {about['threshold']:g}")
    return rows


def shipped_teacher_row(path: Path, threshold: float) -> dict[str, Any]:
    """The shipped teacher's own scores on the sample's test films, computed from the logits it shipped."""
    table = read_soft_targets(path)
    test = table.predictions("test")
    summary = summarize(ModelConfig(name=table.teacher["architecture"]), table.preprocessing.input_size)
    return {**binary_metrics(test.labels, test.prob_positive, threshold), "arch": summary.name,
            "how": "shipped soft targets: trained elsewhere, never on the sample's patients",
            "params M": summary.params_m, "GFLOPs": summary.gflops}


def size_figures(model: torch.nn.Module, input_size: int) -> dict[str, float]:
    return {"params M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": count_flops(model, input_size) / 1e9}
