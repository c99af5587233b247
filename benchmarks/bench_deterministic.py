"""The price of ``train.deterministic``: training images/s with deterministic kernels against the default.

Same AlexNet (96 px, the CPU student preset's settings), same initial weights, same pre-built batches;
epochs of the two modes interleaved round by round after an untimed warm-up epoch each; the ratio of
medians is reported with the spread over rounds. Also checks that two deterministic epochs from the
same start give bit-identical weights. On CUDA, deterministic mode also turns off cuDNN autotuning
and picks deterministic (often slower) kernels; on the CPU most kernels already are deterministic.
"""

from __future__ import annotations

import copy
import time

import torch
from _common import median, parse, parser, write_result
from torch.utils.data import DataLoader

from cxrdistill.config import preset
from cxrdistill.experiments.run import deterministic_algorithms
from cxrdistill.models import create_model
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.training.objectives import SupervisedObjective
from cxrdistill.training.trainer import Trainer

NAME = "bench_deterministic"


def batches(count: int, batch_size: int, size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(batch_size, 3, size, size, generator=generator),
              "label": torch.randint(0, 2, (batch_size,), generator=generator), "key": [""] * batch_size}
             for _ in range(count)]
    return DataLoader(items, batch_size=None)


def epoch_seconds(trainer: Trainer, loader: DataLoader, deterministic: bool) -> float:
    with deterministic_algorithms(deterministic):
        started = time.perf_counter()
        trainer.train_epoch(loader)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--batches", type=int, default=12)
    args, argv = parse(options, argv)
    if args.quick:
        args.rounds, args.batches = 1, 2
    config = preset("cpu/student")
    size, batch_size = config.data.image_size or 96, config.data.batch_size
    loader = batches(args.batches, batch_size, size)
    precision = resolve_precision(torch.device("cpu"), "off")
    torch.manual_seed(0)
    model = create_model(config.model, image_size=size)

    def trainer() -> Trainer:
        return Trainer(copy.deepcopy(model), SupervisedObjective(), config.train, precision, "/tmp", {}, size, False)

    trainers = {"default": trainer(), "deterministic": trainer()}
    for mode, each in trainers.items():
        epoch_seconds(each, loader, mode == "deterministic")  # warm-up
    seconds: dict[str, list[float]] = {mode: [] for mode in trainers}
    for _ in range(args.rounds):
        for mode, each in trainers.items():
            seconds[mode].append(epoch_seconds(each, loader, mode == "deterministic"))
    images = args.batches * batch_size
    speed = {mode: images / median(values) for mode, values in seconds.items()}
    ratio = speed["deterministic"] / speed["default"]
    print(f"deterministic / default training images/s: {ratio:.3f}x "
          f"({speed['deterministic']:.1f} vs {speed['default']:.1f})")

    twins = [trainer(), trainer()]
    for twin in twins:
        torch.manual_seed(1)
        epoch_seconds(twin, loader, True)
    identical = all(torch.equal(a, b) for a, b in zip(twins[0].model.state_dict().values(),
                                                       twins[1].model.state_dict().values(), strict=True))
    print(f"two deterministic epochs from one start identical: {identical}")
    write_result(NAME, __file__, argv, args,
                 {"size": size, "batch_size": batch_size, "batches": args.batches, "rounds": args.rounds},
                 {"seconds": seconds, "images_per_s": speed, "deterministic_over_default": ratio,
                  "identical_weights": identical})


if __name__ == "__main__":
    main()
