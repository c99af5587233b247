"""The main job, offline: teacher, plain student and distilled student, end to end, on real chest X-rays.

Without ``--data`` it unpacks the small sample of real Kermany films bundled with the package
(:mod:`cxrdistill.data.sample`: a few hundred 96-px grey images, split by patient into train and
test) and trains the ``demo/`` presets on it: about 7 CPU-minutes, and well above chance. With
``--data`` the same steps run on the user's data; ``synthetic=True`` keeps the old offline path on a
SYNTHETIC set (no real X-rays), which the tests use.
"""

from __future__ import annotations

from pathlib import Path

from cxrdistill.config import ExperimentConfig, preset
from cxrdistill.data.sample import SAMPLE_ARCHIVE, extract_sample
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.evaluation.evaluate import load_run_evaluation
from cxrdistill.experiments.run import handed_on_checkpoint, train_or_resume
from cxrdistill.models.summary import count_flops
from cxrdistill.runtime.checkpoint import model_from_checkpoint

DEMO_SYNTH = SynthSpec(normal_patients=200, pneumonia_patients=300, seed=0)
"""About 1,000 images: enough optimiser steps for from-scratch CPU presets to leave the 50 % plateau."""
ROLES = ("teacher", "student", "student_kd")
PRESETS = {"sample": "demo", "synthetic": "cpu", "data": "cpu"}
"""Preset folder per data source: the bundled sample gets presets sized to it."""


def demo_configs(root: Path, out: Path, extra: list[str] | None = None,
                 presets: str = "cpu") -> dict[str, ExperimentConfig]:
    common = [f"output_dir={out}", f"data.root={root}", f"data.cache_dir={out / 'cache'}", *(extra or [])]
    configs = {role: preset(f"{presets}/{role}", [*common, f"name={role}"]) for role in ROLES}
    teacher = configs["teacher"]
    configs["student_kd"].distill.teacher = str(handed_on_checkpoint(teacher))
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
             synthetic: bool = False) -> list[dict]:
    """Train the three models and score each on the held-out test split; one row per model.

    Each row says where its numbers come from: the split, its images and patients, and the threshold.
    """
    out = Path(out)
    root, kind = demo_data(data, out, synthetic, progress)
    configs = demo_configs(root, out, extra, PRESETS[kind])
    rows = []
    for role, config in configs.items():
        if progress:
            print(f"== {role}: {config.model.name} at {config.data.image_size}px"
                  + (" (distilled)" if config.distill.teacher else ""))
        final = train_or_resume(config, progress)
        # Training already scored the handed-on checkpoint on the test split (evaluation.json, at 0.5 and at the
        # threshold chosen on val); scoring it again here cost about 8 s of CPU per model (2026-11-29).
        test = load_run_evaluation(final)["test"]
        model, metadata = model_from_checkpoint(final)
        metrics = {name: estimate.value for name, estimate in test.results[0].metrics.items()}
        rows.append({
            "model": role, "arch": metadata["architecture"], "accuracy": metrics["accuracy"],
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"],
            "roc_auc": metrics["roc_auc"], "loss": metrics["loss"],
            "params M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": count_flops(model, int(metadata["input_size"])) / 1e9,
            "data": kind, "split": "test", "images": test.count, "patients": test.patients,
            "threshold": test.results[0].threshold,
        })
    return rows
