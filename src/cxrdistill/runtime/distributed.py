"""Several processes, one run: ``torchrun`` and ``DistributedDataParallel`` (DDP).

A run started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``) with ``WORLD_SIZE`` > 1 joins a process group: NCCL when training on CUDA, gloo on the
CPU. Every helper here is a no-op in a single process, so a plain ``cxrdistill train`` is untouched.

The division of work: each rank trains on its shard of every epoch (``EpochSampler`` shards by rank),
gradients are averaged by DDP, predictions (validation, test, teacher logits) are made shard by shard
and gathered so every rank holds the whole split, and rank 0 alone writes checkpoints, logs, caches and
reports while the others wait at a barrier where they need its files.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import weakref
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from cxrdistill.config import ConfigError, TrainConfig

T = TypeVar("T")

TIMEOUT = timedelta(minutes=60)
"""How long a rank waits at a collective (rank 0 writing a cache or evaluating) before giving up."""


def requested_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: torch.device) -> None:
    """Join the process group ``torchrun`` describes, once per process; nothing when ``WORLD_SIZE`` <= 1.

    CUDA ranks each take the GPU ``LOCAL_RANK`` (so a bare ``cuda`` device means that GPU everywhere).
    """
    if requested_world_size() <= 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    atexit.register(_teardown)


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU for a CUDA run (``cuda:LOCAL_RANK``); other devices as they are."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (filling caches, writing a split); the others then find its files."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model the training step calls: DDP around it when distributed (identical start weights are
    broadcast from rank 0), the model itself otherwise."""
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def seed_rank_epoch(seed: int, epoch: int) -> None:
    """Per-rank random streams (dropout, mixup) that depend on (seed, rank, epoch) only, so a resumed
    distributed run draws what an uninterrupted one would, and no two ranks draw alike."""
    state = np.random.SeedSequence([seed, rank(), epoch]).generate_state(2, dtype=np.uint32)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[1]))


def all_reduce_sum(*values: torch.Tensor) -> None:
    """Sum tensors over ranks in place."""
    if is_distributed():
        for value in values:
            dist.all_reduce(value)


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    DDP keeps parameters identical but each rank updates its running statistics on its own batches; after
    this the model every rank validates and rank 0 saves is the same (as timm's ``distribute_bn``).
    """
    if not is_distributed():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size())


_SHARDS: weakref.WeakKeyDictionary[DataLoader, DataLoader] = weakref.WeakKeyDictionary()


def shard_loader(loader: DataLoader) -> DataLoader:
    """The same loader over this rank's strided share of its dataset, in order (``DistributedSampler``
    without shuffling: the last shares are padded with the first samples, which :func:`gather_in_order`
    drops). Made once per loader, so persistent workers of a validation loader persist."""
    if loader not in _SHARDS:
        sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(), shuffle=False)
        _SHARDS[loader] = DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
        )
    return _SHARDS[loader]


def gather_in_order(shard: list[T], total: int) -> list[T]:
    """Every rank's :func:`shard_loader` results, back in dataset order without the padding duplicates."""
    shards: list[Any] = [None] * world_size()
    dist.all_gather_object(shards, shard)
    # DistributedSampler gives rank r the items r, r + W, r + 2W, ... of the (padded) index list.
    interleaved = [item for row in zip(*shards, strict=True) for item in row]
    return interleaved[:total]


def effective_lr(config: TrainConfig, batch_size: int, processes: int) -> float:
    """The learning rate of this run under ``train.lr_scaling``.

    ``none``: ``train.lr`` whatever the number of processes. ``linear`` (Goyal et al. 2017): ``train.lr`` x
    global batch / ``train.lr_base_batch_size``, the global batch being ``data.batch_size`` (per process) x
    the number of processes; the base defaults to one process's batch, i.e. lr x processes.
    """
    base = config.lr_base_batch_size
    if base is not None and base < 1:
        raise ConfigError(f"train.lr_base_batch_size must be a positive batch size, got {base}")
    if config.warmup_epochs < 0:
        raise ConfigError(f"train.warmup_epochs must be 0 or more, got {config.warmup_epochs}")
    if config.lr_scaling == "none":
        return config.lr
    return config.lr * batch_size * processes / (base or batch_size)
