"""Training images/s of the project's ``Trainer.train_epoch`` against a minimal hand-written PyTorch loop.

Both train the same AlexNet (same initial weights, the CPU student preset's SGD settings) on the same
pre-built batches held in a list (served by one ``DataLoader``, as the trainer needs a loader), so only the
loop itself differs. Target: Trainer >= 0.95x the hand
loop. Then the trainer's speed switches are measured against its default: ``channels_last``, bf16
autocast on the CPU (``amp=on``) and ``torch.compile`` (a compile failure is recorded, not fatal).
Epochs of all variants are interleaved round by round, in a rotating order, after one untimed warm-up
epoch each (which is also where ``torch.compile`` compiles). Each ratio is taken per round and reported
as the geometric mean over rounds with a 95 % interval; a switch is recommended ("keep") only when the
interval's lower bound clears ``KEEP_THRESHOLD``, not when one noisy ratio happens to.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from _common import check, describe, median, parse, parser, ratio_interval, write_result
from torch import nn
from torch.utils.data import DataLoader

from cxrdistill.config import ModelConfig, TrainConfig, preset
from cxrdistill.models import create_model
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.training.objectives import SupervisedObjective
from cxrdistill.training.trainer import Trainer

NAME = "bench_trainer"
TARGET = 0.95
KEEP_THRESHOLD = 1.05
"""A switch is recommended only when the lower end of its 95 % interval beats the default by this much."""


def make_batches(count: int, batch_size: int, size: int) -> DataLoader:
    """Pre-built batches in a list, handed out unchanged by a ``DataLoader`` (the trainer expects one)."""
    generator = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(batch_size, 3, size, size, generator=generator),
                "label": torch.randint(0, 2, (batch_size,), generator=generator),
                "key": [f"b{i}-{j}" for j in range(batch_size)]} for i in range(count)]
    return DataLoader(batches, batch_size=None, shuffle=False)


class HandLoop:
    """The baseline: forward, cross-entropy, backward, SGD step; nothing else."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)

    def train_epoch(self, batches: DataLoader) -> None:
        self.model.train()
        for batch in batches:
            loss = nn.functional.cross_entropy(self.model(batch["image"]), batch["label"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def make_trainer(model: nn.Module, config: TrainConfig, run_dir: Path, size: int) -> Trainer:
    precision = resolve_precision(torch.device("cpu"), config.amp)
    return Trainer(model, SupervisedObjective(), config, precision, run_dir, {"architecture": "alexnet"}, size,
                   progress=False)


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--skip", action="append", default=[], choices=["channels_last", "bf16_autocast", "compile"],
                         help="leave a switch out (repeatable), e.g. bf16_autocast on a CPU without bf16 "
                              "instructions, where it falls back to a slow reference matrix multiply")
    args, argv = parse(options, argv)
    if args.quick:
        size, batch_size, count, rounds, with_compile = 64, 8, 2, 2, False
    else:
        size, batch_size, count, rounds, with_compile = 96, 32, 6, 10, True
    base = preset("cpu/student", ["train.device=cpu", "train.amp='off'"]).train
    configs = {"default": base, "channels_last": replace(base, channels_last=True),
               "bf16_autocast": replace(base, amp="on")}
    if with_compile:
        configs["compile"] = replace(base, compile=True)
    skipped = {name: "not measured: skipped (--skip)" for name in args.skip}
    configs = {name: config for name, config in configs.items() if name not in skipped}
    batches = make_batches(count, batch_size, size)
    reference = create_model(ModelConfig(name="alexnet"), image_size=size)
    print(f"alexnet@{size}px, batch {batch_size}, {count} batches/epoch, {rounds} timed round(s), "
          f"torch threads {torch.get_num_threads()}")

    errors: dict[str, str] = {}
    warmup: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as run_dir:
        loops = {"hand_loop": HandLoop(copy.deepcopy(reference), base)}
        loops.update({name: make_trainer(copy.deepcopy(reference), config, Path(run_dir), size)
                      for name, config in configs.items()})
        for name, loop in list(loops.items()):
            started = time.perf_counter()
            try:
                loop.train_epoch(batches)
            except Exception as error:  # torch.compile needs a working C++ toolchain; record why it failed
                errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                print(f"{name}: failed in warm-up, left out: {errors[name]}")
                del loops[name]
                continue
            warmup[name] = time.perf_counter() - started
            times[name] = []
        order = list(loops)
        for round_index in range(rounds):
            shift = round_index % len(order)
            for name in order[shift:] + order[:shift]:
                started = time.perf_counter()
                loops[name].train_epoch(batches)
                times[name].append(time.perf_counter() - started)

    images = count * batch_size
    rates = {name: images / median(values) for name, values in times.items()}
    for name, value in rates.items():
        print(f"{name:14s} {value:8.1f} images/s  epochs {[round(t, 2) for t in times[name]]} "
              f"(warm-up {warmup[name]:.1f} s)")

    def per_round(baseline: str, variant: str) -> dict:
        """Images/s of ``variant`` over ``baseline``, round by round (same round, same machine state)."""
        return ratio_interval([b / v for b, v in zip(times[baseline], times[variant], strict=True)])

    ratios = {"trainer_vs_hand_loop": per_round("hand_loop", "default")}
    targets = {"trainer_vs_hand_loop": check("Trainer.train_epoch / hand loop, images/s",
                                             ratios["trainer_vs_hand_loop"], TARGET)}
    recommendations = dict(skipped)
    for name in configs:
        if name == "default":
            continue
        if name not in rates:
            recommendations[name] = "not measured: " + errors.get(name, "skipped")
            continue
        ratio = per_round("default", name)
        ratios[f"{name}_vs_default"] = ratio
        keep = ratio["low"] is not None and ratio["low"] >= KEEP_THRESHOLD
        recommendations[name] = (f"keep ({describe(ratio)} the default)" if keep
                                 else f"leave off ({describe(ratio)} the default; lower bound below "
                                      f"{KEEP_THRESHOLD}x)")
        print(f"{name} / default: {recommendations[name]}")
    if not with_compile:
        recommendations["compile"] = "not measured: skipped in --quick mode (compiling takes minutes)"
    settings = {"model": f"alexnet@{size}", "batch_size": batch_size, "batches_per_epoch": count,
                "rounds": rounds, "keep_threshold": KEEP_THRESHOLD, "train_config": asdict(base)}
    payload = {
        "measurements": {"images_per_s": rates, "epoch_seconds": times, "warmup_epoch_seconds": warmup,
                         "errors": errors},
        "ratios": ratios,
        "targets": targets,
        "recommendations": recommendations,
        "notes": "recommendations weigh speed only: bf16 autocast changes numerics, so compare validation "
                 "metrics before adopting it; torch.compile's warm-up (compilation) is not in the epoch times",
    }
    write_result(NAME, __file__, argv, args, settings, payload)
    return payload


if __name__ == "__main__":
    main()
