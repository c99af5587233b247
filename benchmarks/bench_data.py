"""Images/s a training loop can be fed from full-size grey-scale JPEG X-rays, with no model attached.

Baseline: the usual torchvision recipe, ``ImageFolder`` with PIL ``Resize((224, 224))``, ``Grayscale(3)``,
``ToTensor`` and ``Normalize`` in a ``DataLoader``: every epoch decodes and resizes every file again.
Project: ``cxrdistill.data.dataset.build_dataset`` with the decoded-image cache. Warm = the 2nd and
later epochs of a run (and every epoch of later runs); cold = decoding into a fresh cache plus the
first epoch. Both use the same files, batch size, workers and shuffling. Target: warm >= 5x baseline.

Fixtures are ~1500x1200 synthetic grey JPEGs written once to ``--fixtures-dir`` (default
``.cache/bench-fixtures``, git-ignored); they are not X-rays and are never committed.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, check, median, parse, parser, write_result
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision import transforms as T

from cxrdistill.config import DataConfig
from cxrdistill.data.dataset import build_dataset, default_num_workers
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD

NAME = "bench_data"
TARGET = 5.0
SIZE = 224


def make_fixtures(folder: Path, count: int) -> Path:
    """``count`` smooth, noisy grey JPEGs of about 1500x1200 in ``ROOT/train/{NORMAL,PNEUMONIA}``; reused if present."""
    root = folder / f"grey-jpeg-{count}"
    marker = root / "FIXTURES.json"
    spec = {"count": count, "version": 1, "note": "synthetic benchmark fixtures, not X-rays"}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    rng = np.random.default_rng(0)
    for index in range(count):
        label = CLASS_NAMES[int(index % 5 >= 2)]  # 2 NORMAL : 3 PNEUMONIA
        width, height = int(rng.integers(1400, 1601)), int(rng.integers(1100, 1301))
        y, x = np.mgrid[-1:1:complex(0, height), -1:1:complex(0, width)]
        body = np.exp(-((x / 0.8) ** 2 + (y / 0.95) ** 2) ** 2)
        lungs = np.exp(-(((np.abs(x) - 0.35) / 0.22) ** 2 + (y / 0.55) ** 2))
        pixels = 40 + 170 * body - 90 * lungs * body + rng.normal(0, 6, (height, width))
        path = root / "train" / label / f"img-{index:04d}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path, quality=90)
    marker.write_text(json.dumps(spec))
    return root


def loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """The same loader settings for both pipelines (as ``build_loaders`` makes them for training)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


def epoch_seconds(batches: DataLoader, epochs: int) -> list[float]:
    """Wall time of each pure-iteration epoch (the first includes starting the workers)."""
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for _batch in batches:
            pass
        times.append(time.perf_counter() - started)
    return times


def rate(count: int, seconds: list[float]) -> float:
    return count / median(seconds)


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--fixtures-dir", type=Path, default=REPO / ".cache" / "bench-fixtures")
    options.add_argument("--images", type=int, default=None, help="fixture count (default 160; 24 with --quick)")
    args, argv = parse(options, argv)
    count = args.images or (24 if args.quick else 160)
    batch_size = 8 if args.quick else 32
    epochs = 2 if args.quick else 4
    workers = default_num_workers(-1)

    root = make_fixtures(args.fixtures_dir, count)
    baseline_set = datasets.ImageFolder(root / "train", transform=T.Compose([
        T.Resize((SIZE, SIZE)), T.Grayscale(3), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]))
    assert baseline_set.classes == list(CLASS_NAMES)
    records = [ImageRecord(Path(path), label, Path(path).stem, "train") for path, label in baseline_set.samples]
    print(f"{count} JPEGs of ~1500x1200, batch {batch_size}, {workers} worker(s), torch threads "
          f"{torch.get_num_threads()}")

    baseline = epoch_seconds(loader(baseline_set, batch_size, workers), epochs)
    print(f"baseline ImageFolder epochs (s): {[round(t, 2) for t in baseline]}")

    with tempfile.TemporaryDirectory(prefix="bench-data-cache-") as cache_dir:
        config = DataConfig(cache_dir=cache_dir, augment=False)
        started = time.perf_counter()
        project_set = build_dataset(records, config, SIZE, augment=False, progress=False)
        decode = time.perf_counter() - started
        project = epoch_seconds(loader(project_set, batch_size, workers), epochs + 1)
        print(f"project: decoding into the cache {decode:.2f}s, epochs (s): {[round(t, 2) for t in project]}")
        augmented_config = DataConfig(cache_dir=cache_dir)
        augmented_set = build_dataset(records, augmented_config, SIZE, augment=True, progress=False)
        augmented = epoch_seconds(loader(augmented_set, batch_size, workers), epochs)
        print(f"project with training augmentation (warm cache), epochs (s): {[round(t, 2) for t in augmented]}")

    baseline_rate = rate(count, baseline[1:])
    warm_rate = rate(count, project[1:])
    cold_rate = count / (decode + project[0])
    augmented_rate = rate(count, augmented[1:])
    print(f"images/s: baseline {baseline_rate:.1f}, project warm {warm_rate:.1f}, cold {cold_rate:.1f}, "
          f"warm with augmentation {augmented_rate:.1f}")
    targets = {"warm_vs_baseline": check("project warm / baseline", warm_rate / baseline_rate, TARGET)}
    ratios = {
        "warm_vs_baseline": warm_rate / baseline_rate,
        "cold_first_epoch_vs_baseline_steady": cold_rate / baseline_rate,
        "cold_first_epoch_vs_baseline_first_epoch": cold_rate / (count / baseline[0]),
        "augmented_warm_vs_baseline": augmented_rate / baseline_rate,
    }
    for key, value in ratios.items():
        print(f"  {key}: {value:.2f}x")
    payload = {
        "settings": {"images": count, "image_size": "1400-1600 x 1100-1300 grey JPEG, quality 90",
                     "model_input": SIZE, "batch_size": batch_size, "workers": workers, "epochs": epochs,
                     "fixtures": str(root)},
        "measurements": {
            "baseline": {"epoch_seconds": baseline, "steady_images_per_s": baseline_rate,
                         "first_epoch_images_per_s": count / baseline[0]},
            "project": {"decode_to_cache_seconds": decode, "epoch_seconds": project,
                        "warm_images_per_s": warm_rate, "cold_images_per_s": cold_rate},
            "project_augmented": {"epoch_seconds": augmented, "warm_images_per_s": augmented_rate},
        },
        "ratios": ratios,
        "targets": targets,
        "notes": "steady/warm rates use the median epoch after the first; pure iteration, no model",
    }
    write_result(NAME, __file__, argv, args, payload)
    return payload


if __name__ == "__main__":
    main()
