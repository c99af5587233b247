"""Images/s a training loop can be fed from grey-scale X-ray JPEGs, with no model attached.

Two baselines, both torchvision ``ImageFolder`` in a ``DataLoader`` that decodes and resizes every file
again each epoch:

* *naive RGB*: the usual recipe, ``ImageFolder``'s default loader (converts to RGB), ``Resize((224, 224))``
  on three channels, ``Grayscale(3)``, ``ToTensor``, ``Normalize``;
* *careful grey*: what a careful user writes for grey X-rays, PIL ``.convert("L")``, resize the one
  channel, ``ToTensor``, replicate to three channels, ``Normalize``. This is the fair comparison: the
  project also decodes to one grey channel, so the naive baseline's extra cost is not the cache's merit.

Project: ``cxrdistill.data.dataset.build_dataset`` with the decoded-image cache. *Warm* = an epoch from
a filled cache (the 2nd and later epochs of a run, every epoch of later runs); *cold* = decoding into a
fresh cache plus the first epoch; *augmented* = warm with the training augmentation. Same files, batch
size, workers and shuffling for all. Each round times one epoch of every side, in a rotating order, so
machine noise hits them alike; each ratio is the geometric mean over rounds with a 95 % interval.
Target, on the full-size files: warm >= 5x the careful grey baseline over the whole interval (on 224-px
files, which decode quickly, the ratio is reported).

Two cases: ~1500x1200 synthetic grey JPEGs like the original Kermany files (written once to
``--fixtures-dir``, default ``.cache/bench-fixtures``, git-ignored; not X-rays, never committed), and a
few hundred files of the shared 224x224 re-encoded Kermany copy (``--real-224-root``, read in place).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, check, describe, parse, parser, ratio_interval, write_result
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
SHARED_224_TRAIN = REPO.parent / "shared" / "data" / "chest_xray_224" / "train"
SIDES = ("naive_rgb", "careful_grey", "project_warm", "project_augmented", "project_cold")


def make_fixtures(folder: Path, count: int) -> Path:
    """``count`` smooth, noisy grey JPEGs of about 1500x1200 in ``ROOT/{NORMAL,PNEUMONIA}``; reused if present."""
    root = folder / f"grey-jpeg-{count}"
    marker = root / "FIXTURES.json"
    spec = {"count": count, "version": 2, "note": "synthetic benchmark fixtures, not X-rays"}
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
        path = root / label / f"img-{index:04d}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path, quality=90)
    marker.write_text(json.dumps(spec))
    return root


def every_kth_file(root: Path, count: int) -> set[str]:
    """About ``count`` files spread evenly over the sorted class folders (a fixed, reproducible choice)."""
    files = sorted(str(path) for name in CLASS_NAMES for path in (root / name).iterdir() if path.is_file())
    if not files:
        raise FileNotFoundError(f"no files in {root}/{{{','.join(CLASS_NAMES)}}}; pass --real-224-root")
    step = max(1, len(files) // count)
    return set(files[::step][:count])


def open_grey(path: str) -> Image.Image:
    """The careful baseline's loader: one grey channel, as an X-ray is."""
    with open(path, "rb") as stream:
        return Image.open(stream).convert("L")


def replicate_channels(grey: torch.Tensor) -> torch.Tensor:
    return grey.expand(3, -1, -1)


def baseline_sets(root: Path, chosen: set[str]) -> dict[str, datasets.ImageFolder]:
    """The naive RGB and careful grey ``ImageFolder`` pipelines over the same files."""
    def keep(path: str) -> bool:
        return path in chosen

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    naive = datasets.ImageFolder(root, transform=T.Compose([
        T.Resize((SIZE, SIZE)), T.Grayscale(3), T.ToTensor(), normalize]), is_valid_file=keep)
    careful = datasets.ImageFolder(root, loader=open_grey, transform=T.Compose([
        T.Resize((SIZE, SIZE)), T.ToTensor(), T.Lambda(replicate_channels), normalize]), is_valid_file=keep)
    assert naive.classes == careful.classes == list(CLASS_NAMES)
    return {"naive_rgb": naive, "careful_grey": careful}


def loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """The same loader settings for every pipeline (as ``build_loaders`` makes them for training)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


def epoch_seconds(batches: DataLoader) -> float:
    """Wall time of one pure-iteration epoch."""
    started = time.perf_counter()
    for _batch in batches:
        pass
    return time.perf_counter() - started


def measure_case(root: Path, chosen: set[str], batch_size: int, workers: int, rounds: int) -> dict:
    """Seconds per epoch of every side, interleaved round by round; ratios per round against both baselines."""
    baselines = baseline_sets(root, chosen)
    records = [ImageRecord(Path(path), label, Path(path).stem, "train")
               for path, label in baselines["careful_grey"].samples]
    count = len(records)
    with tempfile.TemporaryDirectory(prefix="bench-data-cache-") as work:
        warm_config = DataConfig(cache_dir=str(Path(work) / "warm"))
        persistent = {
            **{name: loader(dataset, batch_size, workers) for name, dataset in baselines.items()},
            "project_warm": loader(build_dataset(records, warm_config, SIZE, augment=False, progress=False),
                                   batch_size, workers),
            "project_augmented": loader(build_dataset(records, warm_config, SIZE, augment=True, progress=False),
                                        batch_size, workers),
        }
        for batches in persistent.values():  # untimed: starts the workers
            epoch_seconds(batches)

        def cold_epoch(round_index: int) -> float:
            """Decoding into a fresh cache, then the first epoch through a fresh loader."""
            started = time.perf_counter()
            config = DataConfig(cache_dir=str(Path(work) / f"cold-{round_index}"))
            dataset = build_dataset(records, config, SIZE, augment=False, progress=False)
            epoch_seconds(loader(dataset, batch_size, workers))
            return time.perf_counter() - started

        seconds: dict[str, list[float]] = {name: [] for name in SIDES}
        for round_index in range(rounds):
            shift = round_index % len(SIDES)
            for name in SIDES[shift:] + SIDES[:shift]:
                seconds[name].append(cold_epoch(round_index) if name == "project_cold"
                                     else epoch_seconds(persistent[name]))
    ratios = {}
    for baseline in ("naive_rgb", "careful_grey"):
        for side, label in (("project_warm", "warm"), ("project_cold", "cold"), ("project_augmented", "augmented")):
            ratios[f"{label}_vs_{baseline}"] = ratio_interval(
                [b / p for b, p in zip(seconds[baseline], seconds[side], strict=True)])
    ratios["careful_grey_vs_naive_rgb"] = ratio_interval(
        [n / c for n, c in zip(seconds["naive_rgb"], seconds["careful_grey"], strict=True)])
    return {"images": count, "epoch_seconds": seconds,
            "median_images_per_s": {name: count / float(np.median(times)) for name, times in seconds.items()},
            "ratios": ratios}


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--fixtures-dir", type=Path, default=REPO / ".cache" / "bench-fixtures")
    options.add_argument("--images", type=int, default=None, help="fixture count (default 160; 16 with --quick)")
    options.add_argument("--real-224-root", type=Path, default=SHARED_224_TRAIN,
                         help="a folder of 224-px files in {NORMAL,PNEUMONIA}/ (default: the shared Kermany copy)")
    options.add_argument("--real-224-images", type=int, default=None, help="files used (default 320; 6 with --quick)")
    args, argv = parse(options, argv)
    count = args.images or (16 if args.quick else 160)
    real_count = args.real_224_images or (6 if args.quick else 320)
    batch_size = 8 if args.quick else 32
    rounds = 2 if args.quick else 8
    workers = default_num_workers(-1)
    fixtures = make_fixtures(args.fixtures_dir, count)
    cases = {"synthetic_full_size": (fixtures, every_kth_file(fixtures, count)),
             "real_224": (args.real_224_root, every_kth_file(args.real_224_root, real_count))}
    print(f"batch {batch_size}, {workers} worker(s), {rounds} rounds, torch threads {torch.get_num_threads()}")

    measurements, ratios = {}, {}
    for case, (root, chosen) in cases.items():
        print(f"== {case}: {len(chosen)} files from {root}")
        measurements[case] = measure_case(root, chosen, batch_size, workers, rounds)
        for name, rate in measurements[case]["median_images_per_s"].items():
            print(f"  {name:18s} {rate:8.1f} images/s (median epoch)")
        for key, ratio in measurements[case].pop("ratios").items():
            ratios[f"{case}/{key}"] = ratio
            print(f"  {key}: {describe(ratio)}")
    targets = {"synthetic_full_size/warm_vs_careful_grey": check(
        "full-size files: project warm / careful grey baseline", ratios["synthetic_full_size/warm_vs_careful_grey"],
        TARGET)}
    print(f"224-px files: project warm / careful grey baseline: {describe(ratios['real_224/warm_vs_careful_grey'])}"
          " (reported, no target: small files decode fast)")
    settings = {"model_input": SIZE, "batch_size": batch_size, "workers": workers, "rounds": rounds,
                "cases": {"synthetic_full_size": {"files": count, "root": str(fixtures),
                                                  "image_size": "1400-1600 x 1100-1300 grey JPEG, quality 90"},
                          "real_224": {"files": len(cases["real_224"][1]), "root": str(args.real_224_root),
                                       "image_size": "224 x 224 RGB JPEG (re-encoded Kermany copy)"}}}
    payload = {
        "measurements": measurements,
        "ratios": ratios,
        "targets": targets,
        "notes": "pure iteration, no model; ratios are baseline seconds / project seconds per round (an "
                 "images/s ratio), geometric mean over rounds with a 95 % t-interval on the log ratios; cold = "
                 "a fresh cache (hashing, decoding, storing) plus the first epoch through a fresh loader; warm, "
                 "augmented and the baselines use persistent workers started before timing",
    }
    write_result(NAME, __file__, argv, args, settings, payload)
    return payload


if __name__ == "__main__":
    main()
