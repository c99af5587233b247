"""Training images/s on 2 CPU processes (DistributedDataParallel over gloo) against 1, one thread each.

Each round launches ``torchrun --nproc_per_node=1`` and then ``--nproc_per_node=2`` on this script in
worker mode, so both sides pay the same start-up (not timed). A worker trains the CPU student preset's
AlexNet with the project's ``Trainer`` (DDP-wrapped when there are two processes) on pre-built synthetic
batches of ``data.batch_size`` images per process: an untimed warm-up epoch, then timed epochs between
barriers. Images/s counts all processes' images; the ratio of 2 to 1 process is taken per round (ideal
scaling: 2x). Only the gloo/CPU path is measured here; the NCCL/GPU path was not run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import check, describe, median, parse, parser, ratio_interval, write_result
from bench_trainer import make_batches

from cxrdistill.config import preset
from cxrdistill.models import create_model
from cxrdistill.runtime import distributed
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.training.objectives import SupervisedObjective
from cxrdistill.training.trainer import Trainer

NAME = "bench_ddp"
TARGET = 1.5
"""Two processes should give at least 1.5x one process's images/s (2x is perfect scaling)."""
WORLD_SIZES = (1, 2)


def worker(argv: list[str]) -> None:
    """One process of a ``torchrun`` launch: time ``--epochs`` training epochs; rank 0 writes ``--out``."""
    options = argparse.ArgumentParser()
    for name in ("--batches", "--batch-size", "--size", "--epochs"):
        options.add_argument(name, type=int, required=True)
    options.add_argument("--model", required=True)
    options.add_argument("--out", type=Path, required=True)
    args = options.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    distributed.setup(device)
    config = preset("cpu/student", [f"model.name={args.model}"])
    torch.manual_seed(0)
    model = create_model(config.model, image_size=args.size)
    trainer = Trainer(model, SupervisedObjective(), config.train, resolve_precision(device, "off"),
                      Path(tempfile.gettempdir()), {}, args.size, progress=False)
    loader = make_batches(args.batches, args.batch_size, args.size)
    trainer.train_epoch(loader)  # warm-up
    seconds = []
    for _ in range(args.epochs):
        distributed.barrier()
        started = time.perf_counter()
        trainer.train_epoch(loader)
        distributed.barrier()
        seconds.append(time.perf_counter() - started)
    if distributed.is_main_process():
        args.out.write_text(json.dumps({"world_size": distributed.world_size(), "seconds": seconds}))


def launch(world: int, args: argparse.Namespace, batch_size: int, out: Path) -> list[float]:
    """Seconds per timed epoch of one ``torchrun`` launch with ``world`` processes of one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               __file__, "--worker", "--batches", str(args.batches), "--batch-size", str(batch_size),
               "--size", str(args.size), "--epochs", str(args.epochs), "--model", args.model, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    subprocess.run(command, env=env, check=True)
    record = json.loads(out.read_text())
    assert record["world_size"] == world, record
    return record["seconds"]


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--rounds", type=int, default=4)
    options.add_argument("--batches", type=int, default=8, help="batches per process and epoch")
    options.add_argument("--epochs", type=int, default=2, help="timed epochs per launch (median taken)")
    options.add_argument("--model", default=None, help="architecture (default: the CPU student preset's)")
    options.add_argument("--size", type=int, default=None, help="input size (default: the preset's)")
    args, argv = parse(options, argv)
    config = preset("cpu/student")
    batch_size = config.data.batch_size
    if args.quick:  # plumbing only: a small network, two small batches
        args.rounds, args.batches, args.epochs, batch_size = 1, 2, 1, 4
        args.model, args.size = args.model or "resnet18", args.size or 32
    args.model, args.size = args.model or config.model.name, args.size or config.data.image_size or 96
    images_per_s: dict[str, list[float]] = {str(w): [] for w in WORLD_SIZES}
    seconds: dict[str, list[list[float]]] = {str(w): [] for w in WORLD_SIZES}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for world in WORLD_SIZES:
                timed = launch(world, args, batch_size, Path(scratch) / f"round{round_index}-{world}.json")
                seconds[str(world)].append(timed)
                images_per_s[str(world)].append(world * args.batches * batch_size / median(timed))
    ratio = ratio_interval([two / one for one, two in zip(images_per_s["1"], images_per_s["2"], strict=True)])
    print(f"images/s, 1 process: {median(images_per_s['1']):.1f}; 2 processes: {median(images_per_s['2']):.1f}; "
          f"ratio {describe(ratio)}")
    payload = {
        "ratios": {"two_vs_one_process": ratio},
        "targets": {"two_vs_one_process": check("2 processes vs 1 (images/s)", ratio, TARGET)},
        "images_per_s": images_per_s,
        "seconds_per_epoch": seconds,
        "scaling_efficiency": ratio["mean"] / 2,
        "note": "gloo on CPU only, one torch thread per process; the NCCL/GPU path was not run on a GPU here",
    }
    write_result(NAME, __file__, argv, args,
                 {"model": args.model, "size": args.size, "batch_size_per_process": batch_size,
                  "batches_per_process": args.batches, "timed_epochs": args.epochs, "world_sizes": list(WORLD_SIZES)},
                 payload)
    return payload


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker([a for a in sys.argv[1:] if a != "--worker"])
    else:
        main()
