"""Seconds per training batch of a preset on real images: a short pilot that sizes a long run before it is queued.

Builds the preset's training split, augmentation and model exactly as ``cxrdistill train`` does, then runs SGD
steps (the preset's lr, momentum and weight decay; plain cross-entropy) for ``--seconds`` and reports, per
batch, the wall time and the CPU time of the process (all threads). On a shared machine wall time depends on
the other jobs; CPU time divided by the thread count estimates the wall time on idle cores. The load average
at start and end is recorded beside the numbers. Data loading runs in-process (no workers), so its cost is in
both figures. The projection for the whole run multiplies by the preset's batches per epoch and epochs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from _common import parse, parser, write_result
from torch import nn
from torch.utils.data import DataLoader

from cxrdistill.config import load_config
from cxrdistill.data.dataset import build_dataset, resolve_split
from cxrdistill.models import create_model, input_size, train_mode

NAME = "pilot_steps"


def main(argv: list[str] | None = None) -> Path:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("preset", help="preset name (cpu/teacher_effnet) or YAML file")
    options.add_argument("--data", required=True, help="Kermany-layout training root")
    options.add_argument("--seconds", type=float, default=120.0, help="how long to time steps (after 2 warm-up steps)")
    options.add_argument("--cache-dir", default=None, help="decoded-image cache (default: the preset's)")
    options.add_argument("--name", default=None, help="result file name (default: pilot_<preset name>)")
    args, argv = parse(options, argv)
    overrides = [f"data.root={args.data}", "data.num_workers=0"]
    if args.cache_dir:
        overrides.append(f"data.cache_dir={args.cache_dir}")
    config = load_config(args.preset, overrides)
    threads = args.threads or config.train.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(config.train.seed)
    size = input_size(config.model, config.data.image_size)
    records = resolve_split(config.data, Path(args.data))["train"]
    dataset = build_dataset(records, config.data, size, augment=True)
    loader = DataLoader(dataset, batch_size=config.data.batch_size, shuffle=True, drop_last=True)
    model = train_mode(create_model(config.model, image_size=size))
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=config.train.lr,
                                momentum=config.train.momentum, weight_decay=config.train.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    load_start = os.getloadavg()
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(loader):
        images, labels = batch["image"], batch["label"]
        wall, cpu = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimiser.step()
        if step >= 2:  # the first steps allocate and warm up
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        print(f"step {step}: {time.perf_counter() - wall:.2f} s wall", flush=True)
        # at least 3 timed steps, however slow the first ones were
        if step >= 4 and (args.quick or time.perf_counter() - started > args.seconds):
            break
    wall_per_batch = sum(walls) / len(walls)
    cpu_per_batch = sum(cpus) / len(cpus)
    batches_per_epoch = len(dataset) // config.data.batch_size
    idle_estimate = cpu_per_batch / threads
    payload = {
        "preset": args.preset, "train_images": len(dataset), "image_size": size,
        "batch_size": config.data.batch_size, "batches_per_epoch": batches_per_epoch, "epochs": config.train.epochs,
        "threads": threads, "timed_batches": len(walls),
        "seconds_per_batch_wall": round(wall_per_batch, 3),
        "cpu_seconds_per_batch": round(cpu_per_batch, 3),
        "seconds_per_batch_idle_estimate": round(idle_estimate, 3),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "projected_training_minutes_idle": round(idle_estimate * batches_per_epoch * config.train.epochs / 60, 1),
        "projected_training_minutes_at_this_load": round(wall_per_batch * batches_per_epoch * config.train.epochs
                                                         / 60, 1),
        "note": "training steps only: validation passes and checkpoint writes come on top",
    }
    print({k: v for k, v in payload.items() if k != "note"})
    name = args.name or f"pilot_{config.name}"
    return write_result(name, __file__, argv, args, {"config": config.to_dict()}, payload)


if __name__ == "__main__":
    main()
