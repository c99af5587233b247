"""Where the student's soft targets come from: the teacher run online, or its logits cached on disk.

*online* runs the teacher (eval mode, no gradients) on the very batch the student sees, augmentation
included, each network at its own input size. It costs a teacher forward pass per student step.

*cached* runs the teacher once over the un-augmented training images and stores the logits on disk,
keyed by the image's content hash (never a loader index, which changes with shuffling and splits),
the teacher checkpoint's hash and the preprocessing. Every epoch, run and temperature of a sweep
then reuses them, so KD costs about what plain training costs. What it gives up: the soft targets
describe the clean image, not the augmented view the student is given. A cache made for another
teacher or preprocessing is never used: its file name would differ. A cache missing images of the
current split (the split changed) is extended, with a message.

Both are registered sources (:data:`TEACHER_SOURCES`, chosen by ``distill.teacher_outputs``). An *ensemble*
(``distill.teacher`` a list of checkpoints, of any architectures and input sizes) runs every member through
the same source, each at its own input size and with its own cache, and hands the loss the logits whose
tempered softmax is the mean of the members' tempered probabilities, ``T log(mean_i softmax(z_i / T))``.
Each member's cache is keyed by its own checkpoint hash, so a temperature sweep reuses all of them and a
retrained member recomputes only its own logits.

A teacher may also be a soft-target file (:mod:`cxrdistill.distillation.soft_targets`): logits shipped
without the network, used like a cache that was computed elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader

from cxrdistill.config import ConfigError, DataConfig
from cxrdistill.data.dataset import build_dataset, file_hasher
from cxrdistill.data.layout import ImageRecord
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.distillation.soft_targets import SoftTargets, is_soft_target_file, read_soft_targets
from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.predict import predict, resize_batch
from cxrdistill.files import atomic_write, file_digest, text_digest
from cxrdistill.registry import Registry
from cxrdistill.runtime import distributed
from cxrdistill.runtime.checkpoint import check_class_names, checkpoint_files, model_from_checkpoint, read_metadata
from cxrdistill.runtime.device import Precision

CACHE_FORMAT = "cxrdistill-teacher-logits/1"


class TeacherCacheError(CxrDistillError, ValueError):
    """A teacher-logit cache that does not belong to this teacher or these images."""


class TeacherSource(Protocol):
    clean_targets: bool
    """The targets describe the un-augmented image (a cache), not the batch the student sees."""

    def logits(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor: ...


class LoadedTeacher:
    """A teacher checkpoint, loaded, checked against the data's classes, and frozen in eval mode."""

    def __init__(self, checkpoint: str | Path, precision: Precision) -> None:
        self.checkpoint = Path(checkpoint)
        self.model, self.metadata = model_from_checkpoint(self.checkpoint)
        check_class_names(self.metadata, f"teacher {self.checkpoint}")
        self.model.to(precision.device).eval().requires_grad_(False)
        self.input_size = int(self.metadata["input_size"])
        self.digest = file_digest(checkpoint_files(self.checkpoint).weights)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.of(self.metadata)


def load_teacher(path: str | Path, precision: Precision) -> LoadedTeacher | SoftTargets:
    """``distill.teacher``'s entry: a checkpoint, or a soft-target file (``.json``)."""
    return read_soft_targets(path) if is_soft_target_file(path) else LoadedTeacher(path, precision)


def teacher_input_size(path: str | Path) -> int:
    """The input size a teacher (checkpoint or soft-target file) reads images at, without building a network."""
    if is_soft_target_file(path):
        return read_soft_targets(path).preprocessing.input_size
    return int(read_metadata(path)["input_size"])


class OnlineTeacher:
    clean_targets = False

    def __init__(self, teacher: LoadedTeacher, precision: Precision) -> None:
        self.teacher = teacher
        self.precision = precision

    @torch.no_grad()
    def logits(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        self.teacher.model.eval()
        if images.shape[-1] != self.teacher.input_size:
            images = resize_batch(images, self.teacher.input_size)
        return self.teacher.model(images).float()


class CachedTeacher:
    """Teacher logits looked up by image content hash, computed once and stored on disk."""

    clean_targets = True

    def __init__(self, table: dict[str, torch.Tensor], device: torch.device) -> None:
        self.table = table
        self.device = device

    def logits(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        try:
            rows = [self.table[key] for key in keys]
        except KeyError as error:
            raise TeacherCacheError(f"no cached teacher logits for image {error.args[0][:12]}…") from None
        return torch.stack(rows).to(self.device, non_blocking=True)


def teacher_cache_path(teacher: LoadedTeacher, data_config: DataConfig) -> Path:
    """Keyed by the teacher's weights and the preprocessing its inputs are made with."""
    preprocessing = text_digest(Preprocessing.of_data(data_config, teacher.input_size).record())
    return Path(data_config.cache_dir) / "teacher-logits" / f"{teacher.digest[:16]}-{preprocessing}.pt"


def read_teacher_cache(path: Path, teacher: LoadedTeacher) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged cache is rebuilt, never trusted
        raise TeacherCacheError(f"teacher cache {path} is unreadable: {error}") from error
    if payload.get("format") != CACHE_FORMAT or payload.get("teacher_digest") != teacher.digest:
        raise TeacherCacheError(f"teacher cache {path} was made for another teacher or format")
    return dict(zip(payload["keys"], payload["logits"], strict=True))


def build_cached_teacher(
    teacher: LoadedTeacher,
    records: list[ImageRecord],
    data_config: DataConfig,
    precision: Precision,
    progress: bool = True,
) -> tuple[CachedTeacher, Path, int]:
    """Load or (re)build the cache for ``records``; returns it, its path and how many images were computed."""
    path = teacher_cache_path(teacher, data_config)
    table: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            table = read_teacher_cache(path, teacher)
        except TeacherCacheError as error:
            print(f"{error}; rebuilding it")
    dataset = build_dataset(records, data_config, teacher.input_size, augment=False, progress=progress)
    missing = [i for i, key in enumerate(dataset.keys) if key not in table]
    if missing:
        if table and progress:
            print(f"teacher cache {path.name} lacks {len(missing)} image(s) of this split; computing them")
        subset = torch.utils.data.Subset(dataset, missing)
        loader = DataLoader(subset, batch_size=data_config.batch_size, shuffle=False)
        # Under torchrun each rank computes a share; all receive the whole table and rank 0 stores it.
        computed = predict(teacher.model, loader, precision, progress=progress, desc="teacher logits",
                           across_ranks=True)
        table.update(zip(computed.keys, torch.from_numpy(computed.logits), strict=True))
        keys = sorted(table)
        payload = {"format": CACHE_FORMAT, "teacher_digest": teacher.digest, "keys": keys,
                   "logits": torch.stack([table[k] for k in keys])}

        def write(stream) -> None:
            torch.save(payload, stream)

        if distributed.is_main_process():
            atomic_write(path, write)
    return CachedTeacher(table, precision.device), path, len(missing)


class EnsembleTeacher:
    """Several teachers as one: the mean of their probabilities at ``temperature``, returned as logits."""

    def __init__(self, members: list[TeacherSource], temperature: float) -> None:
        self.members = members
        self.temperature = temperature
        self.clean_targets = any(member.clean_targets for member in members)

    def logits(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        return mean_probability_logits([m.logits(images, keys) for m in self.members], self.temperature)


def probability_logits(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` gives back ``probabilities``: ``T * log(p)``."""
    return temperature * torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


def mean_probability_logits(member_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The ensemble's soft target: mean of ``softmax(z_i / T)`` over members, as logits at ``T``."""
    probabilities = torch.stack([torch.softmax(z.float() / temperature, dim=1) for z in member_logits]).mean(0)
    return probability_logits(probabilities, temperature)


TeacherSourceFactory = Callable[[LoadedTeacher, list[ImageRecord], DataConfig, Precision, bool], TeacherSource]
TEACHER_SOURCES: Registry[TeacherSourceFactory] = Registry("distill.teacher_outputs")


@TEACHER_SOURCES.register("online")
def online_source(teacher: LoadedTeacher, records: list[ImageRecord], data_config: DataConfig,
                  precision: Precision, progress: bool = True) -> TeacherSource:
    return OnlineTeacher(teacher, precision)


@TEACHER_SOURCES.register("cached")
def cached_source(teacher: LoadedTeacher, records: list[ImageRecord], data_config: DataConfig,
                  precision: Precision, progress: bool = True) -> TeacherSource:
    return build_cached_teacher(teacher, records, data_config, precision, progress)[0]


def teacher_source(
    mode: str, teacher: LoadedTeacher | SoftTargets, records: list[ImageRecord], data_config: DataConfig,
    precision: Precision, progress: bool = True,
) -> TeacherSource:
    """The source registered under ``mode`` for a checkpoint; shipped soft targets are a ready-made cache."""
    if isinstance(teacher, SoftTargets):
        if mode != "cached":
            raise ConfigError(f"distill.teacher {teacher.path} is a soft-target file: it holds logits of the clean "
                              f"images, not a network to run on augmented batches; set distill.teacher_outputs=cached")
        teacher.check_covers(records, file_hasher(data_config))
        return CachedTeacher(teacher.table, precision.device)
    return TEACHER_SOURCES.get(mode)(teacher, records, data_config, precision, progress)


def make_teacher_source(
    mode: str, teachers: list[LoadedTeacher | SoftTargets], records: list[ImageRecord], data_config: DataConfig,
    precision: Precision, temperature: float, progress: bool = True,
) -> TeacherSource:
    """One teacher's source, or an ensemble of one source per teacher."""
    sources = [teacher_source(mode, teacher, records, data_config, precision, progress) for teacher in teachers]
    return sources[0] if len(sources) == 1 else EnsembleTeacher(sources, temperature)
