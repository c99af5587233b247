"""Seconds per epoch of the student trained plainly, with cached teacher logits, and with the online teacher.

All three go through ``cxrdistill.training.run.run_experiment`` with the CPU presets (``cpu/student``,
``cpu/student_kd``) on a synthetic set, runs interleaved round by round so machine noise hits them alike.
The per-epoch ``seconds`` of ``metrics.jsonl`` (training plus validation, checkpoint writing excluded)
are compared; the first epoch of each run also starts the loader workers, so it is reported apart.
The teacher is an untrained InceptionV3 checkpoint: the cost, not the accuracy, is measured. Building
the logit cache happens once, before training, and is reported as set-up time.
Targets: cached KD <= 1.10x plain. Online KD / plain is reported (a teacher forward pass per step).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _common import check, median, parse, parser, write_result

from cxrdistill.config import preset
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.models import create_model
from cxrdistill.training.checkpoint import checkpoint_metadata, save_checkpoint
from cxrdistill.training.run import run_experiment

NAME = "bench_distill"
TARGET_CACHED = 1.10
MODES = ("plain", "cached", "online")


def make_teacher(path: Path, size: int) -> Path:
    """An untrained InceptionV3 checkpoint at the CPU teacher preset's settings."""
    config = preset("cpu/teacher", [f"data.image_size={size}"])
    model = create_model(config.model, image_size=size)
    return save_checkpoint(path, model, checkpoint_metadata(config, size))


def run_mode(mode: str, round_index: int, common: list[str], teacher: Path) -> dict:
    """One training run; returns its per-epoch seconds and the wall time of the whole call."""
    if mode == "plain":
        config = preset("cpu/student", [f"name=plain-{round_index}", *common])
    else:
        config = preset("cpu/student_kd", [f"name={mode}-{round_index}", *common, f"distill.teacher={teacher}",
                                           f"distill.teacher_outputs={mode}"])
    started = time.perf_counter()
    result = run_experiment(config, progress=False)
    wall = time.perf_counter() - started
    seconds = [row["seconds"] for row in result.state.history]
    shutil.rmtree(result.run_dir)  # each run leaves ~0.7 GB of AlexNet checkpoints behind
    print(f"  {mode:7s} round {round_index}: epochs {seconds} s, whole run {wall:.1f} s")
    return {"epoch_seconds": seconds, "wall_seconds": wall, "train_images": len(result.bundle.datasets["train"])}


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    args, argv = parse(options, argv)
    if args.quick:
        # A smoke test: ResNet-18 stands in for AlexNet, whose ~0.7 GB of checkpoints per epoch dominate tiny runs.
        spec, student, student_size, teacher_size = SynthSpec(6, 8, image_size=(96, 80)), "resnet18", 64, 80
        epochs, rounds = 2, 1
    else:
        spec, student, student_size, teacher_size = SynthSpec(80, 120), "alexnet", 96, 96
        epochs, rounds = 3, 2

    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as work:
        work_dir = Path(work)
        make_synthetic_dataset(work_dir / "synthetic", spec)
        teacher = make_teacher(work_dir / "teacher.pt", teacher_size)
        common = [f"output_dir={work_dir / 'runs'}", f"data.root={work_dir / 'synthetic'}",
                  f"data.cache_dir={work_dir / 'cache'}", f"data.image_size={student_size}", f"model.name={student}",
                  f"train.epochs={epochs}", "train.device=cpu"]
        print(f"student {student}@{student_size}px, teacher inception_v3@{teacher_size}px, {epochs} epochs, "
              f"{rounds} round(s)")
        for round_index in range(rounds):
            for mode in MODES:
                runs[mode].append(run_mode(mode, round_index, common, teacher))

    summary = {}
    for mode in MODES:
        later = [s for run in runs[mode] for s in run["epoch_seconds"][1:]]
        first = [run["epoch_seconds"][0] for run in runs[mode]]
        summary[mode] = {"median_epoch_seconds_after_first": median(later), "median_first_epoch_seconds": median(first),
                         "runs": runs[mode]}
    plain = summary["plain"]["median_epoch_seconds_after_first"]
    ratios = {
        "cached_vs_plain": summary["cached"]["median_epoch_seconds_after_first"] / plain,
        "online_vs_plain": summary["online"]["median_epoch_seconds_after_first"] / plain,
        "cached_vs_plain_first_epoch": summary["cached"]["median_first_epoch_seconds"]
        / summary["plain"]["median_first_epoch_seconds"],
        "online_vs_plain_first_epoch": summary["online"]["median_first_epoch_seconds"]
        / summary["plain"]["median_first_epoch_seconds"],
        "cached_vs_plain_whole_run": median([r["wall_seconds"] for r in runs["cached"]])
        / median([r["wall_seconds"] for r in runs["plain"]]),
    }
    for mode in MODES:
        print(f"{mode}: median epoch {summary[mode]['median_epoch_seconds_after_first']:.2f} s "
              f"(first epoch {summary[mode]['median_first_epoch_seconds']:.2f} s)")
    targets = {"cached_vs_plain": check("cached KD / plain, seconds per epoch", ratios["cached_vs_plain"],
                                        TARGET_CACHED, at_least=False)}
    print(f"online KD / plain, seconds per epoch: {ratios['online_vs_plain']:.3f}x (reported, no target)")
    payload = {
        "settings": {"student": f"{student}@{student_size}", "teacher": f"inception_v3@{teacher_size} (untrained)",
                     "epochs": epochs, "rounds": rounds, "synthetic_spec": repr(spec),
                     "presets": ["cpu/student", "cpu/student_kd"]},
        "measurements": summary,
        "ratios": ratios,
        "targets": targets,
        "notes": "epoch seconds from metrics.jsonl (train + validation); first epoch also starts loader workers",
    }
    write_result(NAME, __file__, argv, args, payload)
    return payload


if __name__ == "__main__":
    main()
