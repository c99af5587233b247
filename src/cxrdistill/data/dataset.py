"""The torch ``Dataset`` of X-ray images and the loaders built from a data config.

A sample is a small dict, ``{"image": (3, S, S) float, "label": int, "key": str}``; ``key`` is the
SHA-256 of the file's bytes — the identity teacher-output caches are keyed by (never a loader index,
which changes with shuffling and splits).

Training batches are reproducible from ``(seed, epoch)`` alone: :class:`EpochSampler` draws the order
from a generator seeded per epoch and hands each draw its own augmentation seed, which the dataset
applies wherever it runs. So a resumed run sees the batches and augmentations an uninterrupted one
would have, whatever the number of (persistent) loader worker processes. Under ``torchrun`` it deals
each rank every ``num_replicas``-th draw of that same sequence (as ``DistributedSampler`` does), so the
epoch is still a function of ``(seed, epoch)`` and a run resumes exactly at any number of processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from cxrdistill.config import DataConfig
from cxrdistill.data.cache import DecodedImageCache, FileHasher
from cxrdistill.data.io import UnreadableImageError
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.data.splits import DataSplit, default_split_path, prepare_split
from cxrdistill.data.transforms import AugmentSettings, XRayTransform


class XRayDataset(Dataset):
    """Images of one split, decoded from the cache (or from disk when ``cache`` is None)."""

    def __init__(
        self,
        records: list[ImageRecord],
        preprocessing: Preprocessing,
        transform: Callable[[np.ndarray], torch.Tensor],
        cache: DecodedImageCache | None = None,
        hasher: FileHasher | None = None,
        progress: bool = True,
    ) -> None:
        self.preprocessing = preprocessing
        self.image_size = preprocessing.input_size
        self.transform = transform
        self.cache = cache
        if cache is not None:
            keys = cache.digests([r.path for r in records])
            rows, errors = cache.add([r.path for r in records], progress=progress, digests=keys)
        else:
            hasher = hasher or FileHasher(None)
            keys = [hasher.digest(r.path) for r in records]
            rows, errors = list(range(len(records))), []
        if errors:
            listed = "\n  ".join(str(e) for e in errors[:10])
            warnings.warn(
                f"skipping {len(errors)} unreadable image(s) "
                f"(`cxrdistill data audit` lists them all):\n  {listed}",
                stacklevel=2,
            )
        kept = [(r, row, k) for r, row, k in zip(records, rows, keys, strict=True) if row >= 0]
        self.records = [r for r, _, _ in kept]
        self.rows = [row for _, row, _ in kept]
        self.keys = [k for _, _, k in kept]
        for label, name in enumerate(CLASS_NAMES):
            if self.records and not any(r.label == label for r in self.records):
                warnings.warn(f"this split has no readable {name} images", stacklevel=2)

    def __len__(self) -> int:
        return len(self.records)

    def pixels(self, index: int):
        if self.cache is not None:
            return self.cache.row(self.rows[index])
        return self.preprocessing.pixels(self.records[index].path)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """``index``, or ``(augmentation seed, index)`` as :class:`EpochSampler` draws them."""
        seed, index = index if isinstance(index, tuple) else (None, index)
        try:
            pixels = self.pixels(index)
        except UnreadableImageError as error:
            raise UnreadableImageError(error.path, f"{error.reason} (file changed since the run started?)") from None
        if seed is None:
            image = self.transform(pixels)
        else:
            # The transforms draw from torch's global generator; fork it so the caller's stream is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(pixels)
        return {"image": image, "label": self.records[index].label, "key": self.keys[index]}

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def totals(self) -> dict[str, int]:
        return {name: self.labels.count(i) for i, name in enumerate(CLASS_NAMES)}


class EpochSampler(Sampler[tuple[int, int]]):
    """Draws ``(augmentation seed, index)`` pairs; order and seeds depend on ``(seed, epoch)`` only.

    Wraps a random sampler (shuffle or class-balanced); :meth:`set_epoch` chooses the epoch, like
    ``DistributedSampler.set_epoch``, and how many of this rank's first draws to leave out (the batches a
    run resumed mid-epoch has done: they are never read, and the rest keep their order and seeds). The
    sampler runs in the main process, so the epoch reaches persistent worker processes with each index
    instead of through their once-seeded generators.

    With ``num_replicas`` > 1 the epoch's draws are padded (repeating its first ones) to a multiple of
    ``num_replicas`` and rank ``rank`` takes draws ``rank, rank + num_replicas, ...``: every rank gets as
    many batches (DDP needs that) and each draw keeps its augmentation seed whichever rank takes it.
    """

    def __init__(
        self, sampler: RandomSampler | WeightedRandomSampler, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.sampler = sampler
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if skip < 0:
            raise ValueError(f"skip must be at least 0, got {skip}")
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Every iteration starts from a fresh generator: the DataLoader calls iter() more than once per epoch
        # with worker processes (and draws from the first iterator it then drops).
        self.sampler.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draws = list(self.sampler)
        # One seed per draw (not per image): the balanced sampler may draw an image twice in an epoch.
        seeds = np.random.SeedSequence([self.seed, self.epoch]).generate_state(len(draws), dtype=np.uint64)
        pairs = list(zip(map(int, seeds), map(int, draws), strict=True))
        if self.num_replicas > 1:
            total = self.draws_per_rank() * self.num_replicas
            pairs = (pairs * math.ceil(total / max(1, len(pairs))))[:total][self.rank::self.num_replicas]
        yield from pairs[self.skip:]

    def draws_per_rank(self) -> int:
        """This rank's share of the whole epoch, the skipped draws included."""
        return math.ceil(len(self.sampler) / self.num_replicas)

    def __len__(self) -> int:
        return max(0, self.draws_per_rank() - self.skip)


def default_num_workers(requested: int) -> int:
    if requested >= 0:
        return requested
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class DataBundle:
    split: DataSplit
    datasets: dict[str, XRayDataset]
    loaders: dict[str, DataLoader]

    def class_counts(self) -> list[int]:
        counts = self.datasets["train"].totals()
        return [counts[name] for name in CLASS_NAMES]


def augment_settings(config: DataConfig) -> AugmentSettings | None:
    """The training augmentation a config asks for: each setting read from the config field of its own name,
    so a field added, removed or reordered on either side can never hand one setting another's value."""
    if not config.augment:
        return None
    return AugmentSettings(**{field.name: getattr(config, field.name) for field in dataclasses.fields(AugmentSettings)})


def build_dataset(
    records: list[ImageRecord], config: DataConfig, image_size: int, augment: bool, progress: bool = True
) -> XRayDataset:
    preprocessing = Preprocessing.of_data(config, image_size)
    cache = DecodedImageCache(Path(config.cache_dir) / "decoded", image_size, config.border_crop) \
        if config.use_cache else None
    # Without augmentation a sample is exactly what inference computes from the same file (data.preprocess).
    transform = (XRayTransform(augment_settings(config), config.intensity_normalization) if augment
                 else preprocessing.from_pixels)
    return XRayDataset(records, preprocessing, transform, cache, file_hasher(config), progress=progress)


def file_hasher(config: DataConfig) -> FileHasher:
    """Content digests of a run's images (the keys of teacher logits), memoised in its cache folder."""
    return FileHasher(Path(config.cache_dir) / "decoded" / "file-hashes.json")


def resolve_split(config: DataConfig, root: Path) -> DataSplit:
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    split_file = (
        Path(config.split_file)
        if config.split_file
        else default_split_path(config.cache_dir, root, config.split_seed, fractions)
    )
    split = prepare_split(root, split_file, config.val_fraction, config.test_fraction, config.split_seed)
    if config.max_per_class is not None:
        split = DataSplit(split.root, {**split.splits, "train": cap_per_class(split["train"], config)})
    return split


def cap_per_class(records: list[ImageRecord], config: DataConfig) -> list[ImageRecord]:
    """A seeded random subsample of at most ``max_per_class`` training images per class.

    Only the training split is capped, so validation and test stay whole and patient-disjoint from it.
    """
    generator = torch.Generator().manual_seed(config.split_seed)
    kept: list[ImageRecord] = []
    for label in range(len(CLASS_NAMES)):
        of_class = [r for r in records if r.label == label]
        order = torch.randperm(len(of_class), generator=generator).tolist()
        kept += [of_class[i] for i in order[: config.max_per_class]]
    return sorted(kept, key=lambda r: str(r.path))


def build_loaders(
    config: DataConfig,
    root: Path,
    image_size: int,
    seed: int,
    balance_sampler: bool = False,
    pin_memory: bool = False,
    progress: bool = True,
    train_image_size: int | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataBundle:
    """Split (or reuse the saved split), build datasets and loaders for train/val/test.

    ``train_image_size`` decodes training images at another size than evaluation ones: online
    distillation feeds the teacher's larger input and resizes the same batch down for the student.
    ``num_replicas`` and ``rank`` give this process its share of each training epoch (``torchrun``).
    """
    split = resolve_split(config, root)
    datasets = {
        name: build_dataset(
            records, config, (train_image_size or image_size) if name == "train" else image_size,
            augment=(name == "train"), progress=progress,
        )
        for name, records in split.splits.items()
    }
    workers = default_num_workers(config.num_workers)
    common = {"batch_size": config.batch_size, "num_workers": workers, "pin_memory": pin_memory,
              "persistent_workers": workers > 0}
    train = datasets["train"]
    if balance_sampler:
        counts = train.totals()
        weights = torch.tensor([1.0 / counts[CLASS_NAMES[label]] for label in train.labels])
        drawn = WeightedRandomSampler(weights, num_samples=len(train), replacement=True)
    else:
        drawn = RandomSampler(train)
    sampler = EpochSampler(drawn, seed, num_replicas, rank)
    # Each loader gets its own generator for the workers' base seeds, which the DataLoader would otherwise
    # draw from torch's global one - once per process with persistent workers, so a resumed run would drift.
    loaders = {"train": DataLoader(train, sampler=sampler, drop_last=len(sampler) > config.batch_size,
                                   generator=torch.Generator().manual_seed(seed), **common)}
    for name, dataset in datasets.items():
        if name != "train":
            loaders[name] = DataLoader(dataset, shuffle=False, generator=torch.Generator().manual_seed(seed),
                                       **common)
    return DataBundle(split, datasets, loaders)
