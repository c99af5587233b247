"""The main job on its offline default: teacher, plain student and distilled student, end to end.

Without ``--data`` it writes a SYNTHETIC data set first (no download, no real X-rays), so a fresh
machine can run the whole method in minutes on a CPU. With ``--data`` the same steps run on real data.
"""

from __future__ import annotations

from pathlib import Path

from cxrdistill.config import ExperimentConfig, preset
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.evaluation.evaluate import evaluate_checkpoint
from cxrdistill.models.summary import count_flops
from cxrdistill.training.checkpoint import model_from_checkpoint
from cxrdistill.training.run import train_or_resume

DEMO_SYNTH = SynthSpec(normal_patients=200, pneumonia_patients=300, seed=0)
"""About 1,000 images: enough optimiser steps for from-scratch CPU presets to leave the 50 % plateau."""
ROLES = (("teacher", "cpu/teacher"), ("student", "cpu/student"), ("student_kd", "cpu/student_kd"))


def demo_configs(root: Path, out: Path, extra: list[str] | None = None) -> dict[str, ExperimentConfig]:
    common = [f"output_dir={out}", f"data.root={root}", f"data.cache_dir={out / 'cache'}", *(extra or [])]
    configs = {role: preset(name, [*common, f"name={role}"]) for role, name in ROLES}
    configs["student_kd"].distill.teacher = str(configs["teacher"].run_dir / "best.safetensors")
    return configs


def run_demo(data: Path | None, out: Path, progress: bool = True, extra: list[str] | None = None) -> list[dict]:
    out = Path(out)
    if data is None:
        data = out / "synthetic-data"
        if progress:
            print(f"Writing a SYNTHETIC data set to {data} (not real X-rays; results say nothing clinical).")
        make_synthetic_dataset(data, DEMO_SYNTH)
    rows = []
    for role, config in demo_configs(Path(data), out, extra).items():
        if progress:
            print(f"== {role}: {config.model.name} at {config.data.image_size}px"
                  + (" (distilled)" if config.distill.teacher else ""))
        best = train_or_resume(config, progress)
        report = evaluate_checkpoint(best, data, "test", n_bootstrap=200, progress=progress)
        model, metadata = model_from_checkpoint(best)
        metrics = {name: estimate.value for name, estimate in report.metrics.items()}
        rows.append({
            "model": role, "arch": metadata["architecture"], "accuracy": metrics["accuracy"],
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"],
            "roc_auc": metrics["roc_auc"], "loss": metrics["loss"],
            "params M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": count_flops(model, int(metadata["input_size"])) / 1e9,
        })
    return rows
