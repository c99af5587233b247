"""Seconds per epoch of the student trained plainly, with cached teacher logits, and with the online teacher.

All three go through ``cxrdistill.experiments.run.run_experiment`` with the CPU presets (``cpu/student``,
``cpu/student_kd``) on a synthetic set, runs interleaved round by round so machine noise hits them alike.
The per-epoch ``seconds`` of ``metrics.jsonl`` (training plus validation, checkpoint writing excluded)
are compared epoch by epoch within a round; the first epoch of each run also starts the loader workers,
so it is left out of the ratios and reported apart. Ratios are geometric means over the pairs with a
95 % interval. The teacher is an untrained InceptionV3 checkpoint: the cost, not the accuracy, is measured.

Two set-ups, because the online teacher's cost grows with its input size:

* *reduced*: the CPU presets, AlexNet student and InceptionV3 teacher both at 96 px;
* *paper_size*: the paper's sizes, InceptionV3 teacher at 299 px, AlexNet student at 224 px, on a few
  dozen images (enough for a ratio, not for learning anything).

The cached teacher's one-off set-up (building the logit cache: hashing and decoding the training images
at the teacher's size into a fresh cache, one teacher forward pass over them, writing the file) is timed
on its own once per round with ``build_cached_teacher``.
Target: cached KD <= 1.10x plain per epoch (whole interval). Online KD / plain is reported.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from _common import check, describe, median, parse, parser, ratio_interval, write_result

from cxrdistill.config import ExperimentConfig, preset
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.distillation.teacher import LoadedTeacher, build_cached_teacher
from cxrdistill.experiments.run import run_experiment
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint
from cxrdistill.runtime.device import resolve_precision

NAME = "bench_distill"
TARGET_CACHED = 1.10
MODES = ("plain", "cached", "online")


@dataclass(frozen=True)
class SetUp:
    """One teacher/student pairing to time: data size, models, input sizes and how many runs."""

    spec: SynthSpec
    student: str
    student_size: int
    teacher_size: int
    epochs: int
    rounds: int


def set_ups(quick: bool) -> dict[str, SetUp]:
    if quick:  # a smoke test: ResNet-18 stands in for AlexNet, whose ~0.7 GB of checkpoints dominate tiny runs
        tiny = SynthSpec(6, 8, image_size=(96, 80))
        return {"reduced": SetUp(tiny, "resnet18", 64, 80, epochs=2, rounds=1),
                "paper_size": SetUp(tiny, "resnet18", 64, 96, epochs=2, rounds=1)}
    # Sized for a shared 2-core machine: ~125 training images at 96 px, a few dozen at the paper's sizes.
    return {"reduced": SetUp(SynthSpec(40, 60), "alexnet", 96, 96, epochs=3, rounds=2),
            "paper_size": SetUp(SynthSpec(8, 12), "alexnet", 224, 299, epochs=2, rounds=2)}


def make_teacher(path: Path, size: int) -> Path:
    """An untrained InceptionV3 checkpoint at the CPU teacher preset's settings."""
    config = preset("cpu/teacher", [f"data.image_size={size}"])
    model = create_model(config.model, image_size=size)
    return save_checkpoint(path, model, checkpoint_metadata(config, size))


def mode_config(mode: str, round_index: int, common: list[str], teacher: Path) -> ExperimentConfig:
    if mode == "plain":
        return preset("cpu/student", [f"name=plain-{round_index}", *common])
    return preset("cpu/student_kd", [f"name={mode}-{round_index}", *common, f"distill.teacher={teacher}",
                                     f"distill.teacher_outputs={mode}"])


def run_mode(config: ExperimentConfig) -> tuple[list[float], list]:
    """One training run; returns its per-epoch seconds and its training records."""
    result = run_experiment(config, progress=False)
    seconds = [row["seconds"] for row in result.state.history]
    shutil.rmtree(result.run_dir)  # each AlexNet run leaves ~0.7 GB of checkpoints behind
    return seconds, result.bundle.split["train"]


def teacher_cache_setup_seconds(config: ExperimentConfig, records: list, cache_dir: Path) -> float:
    """Building the teacher-logit cache from nothing: what a first cached KD run pays before its first epoch."""
    precision = resolve_precision(torch.device("cpu"), config.train.amp)
    teacher = LoadedTeacher(config.distill.teacher, precision)
    started = time.perf_counter()
    build_cached_teacher(teacher, records, replace(config.data, cache_dir=str(cache_dir)), precision, progress=False)
    return time.perf_counter() - started


def measure(set_up: SetUp, work_dir: Path) -> dict:
    """Interleaved runs of the three modes, round by round, and the cache set-up time once per round."""
    make_synthetic_dataset(work_dir / "synthetic", set_up.spec)
    teacher = make_teacher(work_dir / "teacher.safetensors", set_up.teacher_size)
    common = [f"output_dir={work_dir / 'runs'}", f"data.root={work_dir / 'synthetic'}",
              f"data.cache_dir={work_dir / 'cache'}", f"data.image_size={set_up.student_size}",
              f"model.name={set_up.student}", f"train.epochs={set_up.epochs}", "train.device=cpu"]
    epochs: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    setup_seconds: list[float] = []
    configs: dict[str, dict] = {}
    for round_index in range(set_up.rounds):
        for mode in MODES:
            config = mode_config(mode, round_index, common, teacher)
            configs.setdefault(mode, config.to_dict())
            seconds, train_records = run_mode(config)
            epochs[mode].append(seconds)
            print(f"  {mode:7s} round {round_index}: epochs {seconds} s")
        kd_config = mode_config("cached", round_index, common, teacher)
        setup_seconds.append(teacher_cache_setup_seconds(kd_config, train_records,
                                                         work_dir / f"setup-cache-{round_index}"))
        print(f"  teacher cache set-up from nothing, round {round_index}: {setup_seconds[-1]:.2f} s")

    def later_epochs(mode: str) -> list[float]:
        return [s for run in epochs[mode] for s in run[1:]]

    plain_epoch = median(later_epochs("plain"))
    ratios = {f"{mode}_vs_plain": ratio_interval([m / p for m, p in zip(later_epochs(mode), later_epochs("plain"),
                                                                         strict=True)])
              for mode in ("cached", "online")}
    ratios.update({f"{mode}_vs_plain_first_epoch": ratio_interval(
        [m[0] / p[0] for m, p in zip(epochs[mode], epochs["plain"], strict=True)]) for mode in ("cached", "online")})
    return {
        "train_images": len(train_records),
        "epoch_seconds": epochs,
        "median_epoch_seconds_after_first": {mode: median(later_epochs(mode)) for mode in MODES},
        "teacher_cache_setup_seconds": median(setup_seconds),
        "teacher_cache_setup_seconds_per_round": setup_seconds,
        "teacher_cache_setup_in_plain_epochs": median(setup_seconds) / plain_epoch,
        "ratios": ratios,
        "configs": configs,
    }


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    args, argv = parse(options, argv)
    measurements, ratios = {}, {}
    for case, set_up in set_ups(args.quick).items():
        print(f"== {case}: student {set_up.student}@{set_up.student_size}px, teacher "
              f"inception_v3@{set_up.teacher_size}px, {set_up.epochs} epochs, {set_up.rounds} round(s)")
        with tempfile.TemporaryDirectory(prefix=f"bench-distill-{case}-") as work:
            measurements[case] = measure(set_up, Path(work))
        for key, ratio in measurements[case].pop("ratios").items():
            ratios[f"{case}/{key}"] = ratio
            print(f"  {key}: {describe(ratio)}")
        print(f"  teacher cache set-up: {measurements[case]['teacher_cache_setup_seconds']:.2f} s = "
              f"{measurements[case]['teacher_cache_setup_in_plain_epochs']:.2f} plain epochs")
    targets = {f"{case}/cached_vs_plain": check(f"{case}: cached KD / plain, seconds per epoch",
                                                ratios[f"{case}/cached_vs_plain"], TARGET_CACHED, at_least=False)
               for case in measurements}
    settings = {"presets": ["cpu/student", "cpu/student_kd"],
                "set_ups": {case: {**vars(set_up), "spec": repr(set_up.spec),
                                   "teacher": f"inception_v3@{set_up.teacher_size} (untrained)",
                                   "resolved_configs": measurements[case].pop("configs")}
                            for case, set_up in set_ups(args.quick).items()}}
    payload = {
        "measurements": measurements,
        "ratios": ratios,
        "targets": targets,
        "notes": "epoch seconds from metrics.jsonl (train + validation); ratios pair epoch k of a mode's run with "
                 "epoch k of the plain run of the same round, first epochs (worker start) apart; the online "
                 "ratio depends on the teacher's input size: compare reduced (96 px) with paper_size (299 px)",
    }
    write_result(NAME, __file__, argv, args, settings, payload)
    return payload


if __name__ == "__main__":
    main()
