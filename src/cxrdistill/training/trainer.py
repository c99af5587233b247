"""The training loop: SGD with momentum, step or cosine schedule, AMP, mixup, weight averaging (EMA),
checkpoints, resume and early stopping.

The loop knows nothing about what it minimises (see ``objectives``) or where batches come from; it
owns the bookkeeping that must be right for every experiment. The loss is accumulated on the device
and read once per ``log_every`` steps, so the CPU never waits for the GPU on each step.

Every epoch writes the ``last`` checkpoint (and ``best`` when the monitored validation metric improves;
see :mod:`cxrdistill.runtime.checkpoint`), then the resume state ``last.state.pt``, then
``metrics.jsonl``, each atomically. With ``ema_decay`` set, validation and the saved weights are the
moving average (what gets deployed); the raw weights travel in the resume state. ``resume=True``
restores model, optimiser, scheduler, gradient scaler, moving average, early-stopping state and
random-number generators (see :mod:`cxrdistill.runtime.random_state`) from it. Ctrl-C (SIGINT) stops
after the current step and saves the state mid-epoch; resuming skips the batches already done in the
sampler (each epoch's draws depend on ``(seed, epoch)`` only, so the rest of the epoch is known without
reading an image of the done batches) and gives the weights an uninterrupted run would have. A non-finite loss
stops training with the epoch and step it appeared at.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrdistill.config import ConfigError, TrainConfig
from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.metrics import binary_metrics
from cxrdistill.evaluation.predict import predict
from cxrdistill.files import atomic_write_text
from cxrdistill.models import train_mode
from cxrdistill.runtime import distributed
from cxrdistill.runtime.checkpoint import (
    WEIGHTS_SUFFIX,
    load_training_state,
    save_checkpoint,
    save_training_state,
    training_state_path,
)
from cxrdistill.runtime.device import Precision
from cxrdistill.runtime.random_state import capture_random_state, restore_random_state
from cxrdistill.training.objectives import BatchMix, Objective

MINIMISED = {"val_loss"}


class TrainingInterrupted(CxrDistillError):
    """Ctrl-C (SIGINT) stopped training after a step; the state to resume from was saved first."""

    exit_status = 130  # the shell's convention for a SIGINT


class NonFiniteLossError(CxrDistillError, FloatingPointError):
    """The training loss became NaN or infinite; the checkpoints of the last finished epoch are kept."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, so one seed gives one run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    epoch: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    """Steps already done of epoch ``epoch + 1`` (non-zero only in a state saved at an interruption)."""
    partial: dict[str, Any] = field(default_factory=dict)
    """That epoch's running sums (loss, correct, seen) at the interruption."""

    def improved(self, value: float, monitor: str) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        return value < self.best_value if monitor in MINIMISED else value > self.best_value

    def finished(self, epochs: int) -> bool:
        """All ``epochs`` done, or stopped early: the loop ends and the last checkpoint must be on disk."""
        return self.epoch >= epochs or self.stopped_early


class Trainer:
    """Fits ``model`` with ``objective`` on ``loaders['train']``, monitoring ``loaders['val']``."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        config: TrainConfig,
        precision: Precision,
        run_dir: Path,
        metadata: dict[str, Any],
        input_size: int,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.precision = precision
        self.run_dir = Path(run_dir)
        self.metadata = metadata
        self.input_size = input_size
        self.progress = progress
        self.model = model.to(precision.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.train_model = distributed.wrap_model(self.forward_model, precision.device)
        """What a training step calls: DDP around ``forward_model`` under ``torchrun``, else ``forward_model``."""
        self.objective = objective
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = make_scheduler(self.optimizer, config)
        self.ema = make_ema(self.model, config.ema_decay, config.ema_warmup)
        self.scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.needs_grad_scaler)
        self.state = TrainState()
        self.interrupted = False
        if config.checkpoint_every < 1:
            raise ConfigError(f"train.checkpoint_every must be at least 1 (epochs), got {config.checkpoint_every}")
        self.state_saved_at: int | None = None
        """The epoch ``last.state.pt`` holds (``None``: none written by this run yet)."""

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.run_dir / f"last{WEIGHTS_SUFFIX}"

    @property
    def best_path(self) -> Path:
        return self.run_dir / f"best{WEIGHTS_SUFFIX}"

    @property
    def state_path(self) -> Path:
        """``last.state.pt``: everything ``--resume`` needs, in one file."""
        return training_state_path(self.last_path)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def saved_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.forward_model

    def _training_state(self) -> dict[str, Any]:
        return {
            "model_state": self.saved_model.state_dict(),
            "raw_model": self.model.state_dict() if self.ema is not None else None,
            "ema_updates": int(self.ema.n_averaged) if self.ema is not None else None,
            "epoch": self.state.epoch,
            "best_value": self.state.best_value,
            "best_epoch": self.state.best_epoch,
            "epochs_without_improvement": self.state.epochs_without_improvement,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_random_state(),
            "stopped_early": self.state.stopped_early,
            "step": self.state.step,
            "partial": self.state.partial,
        }

    def resume(self) -> None:
        """Continue from ``last.state.pt``; metrics lines of epochs after it (a killed run's) are dropped."""
        saved = load_training_state(self.state_path)
        saved_arch = saved["metadata"]["architecture"]
        if saved_arch != self.metadata["architecture"]:
            raise ValueError(
                f"{self.state_path} is a {saved_arch} run but the config trains {self.metadata['architecture']}"
            )
        if self.ema is not None:
            if saved.get("raw_model") is None:
                raise ValueError(f"{self.state_path} was trained without train.ema_decay; resume it without EMA")
            self.ema.module.load_state_dict(saved["model_state"])
            self.ema.n_averaged.fill_(saved["ema_updates"])
        self.model.load_state_dict(saved.get("raw_model") or saved["model_state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        base_lrs = self.scheduler.base_lrs  # this run's (``lr_scaling`` may scale it by another world size)
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scheduler.base_lrs = base_lrs
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scaler.load_state_dict(saved["scaler"])
        self.state.epoch = self.state_saved_at = saved["epoch"]
        self.state.best_value = saved["best_value"]
        self.state.best_epoch = saved["best_epoch"]
        self.state.epochs_without_improvement = saved["epochs_without_improvement"]
        restore_random_state(saved["rng"])
        self.state.stopped_early = saved["stopped_early"]
        self.state.step, self.state.partial = saved.get("step", 0), saved.get("partial", {})
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
        self.state.history = [row for row in map(json.loads, lines) if row["epoch"] <= self.state.epoch]
        self._write_metrics()

    def _write_metrics(self) -> None:
        if distributed.is_main_process():
            atomic_write_text(self.metrics_path, "".join(json.dumps(row) + "\n" for row in self.state.history))

    @contextlib.contextmanager
    def _stop_on_sigint(self) -> Iterator[None]:
        """The first Ctrl-C asks the loop to stop after its current step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        trainer_process = os.getpid()

        def ask_to_stop(signum: int, frame: Any) -> None:
            if os.getpid() != trainer_process:
                return  # a data-loader worker forked with this handler: the trainer decides
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            tqdm.write("interrupt: stopping after the current step (Ctrl-C again to stop at once, unsaved)")

        previous = signal.signal(signal.SIGINT, ask_to_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_if_interrupted(self, step: int | None = None) -> None:
        """Save the resume state (mid-epoch after ``step`` steps, or at the epoch boundary) and stop."""
        if not self._interrupt_agreed():
            return
        if step is not None:
            self.state.step = step
        if distributed.is_main_process() and (step is not None or self.state_saved_at != self.state.epoch):
            save_training_state(self.state_path, self._training_state(), self.metadata)
        where = (f"epoch {self.state.epoch + 1}, step {step}" if step is not None
                 else f"the end of epoch {self.state.epoch}")
        raise TrainingInterrupted(
            f"interrupted at {where}; the state to continue from is saved in {self.state_path}. "
            f"Continue with the same command and --resume"
        )

    def _interrupt_agreed(self) -> bool:
        """Under ``torchrun`` a Ctrl-C on any rank stops every rank at the same step (else they would hang)."""
        if distributed.is_distributed():
            flag = torch.tensor(int(self.interrupted), device=self.precision.device)
            distributed.all_reduce_sum(flag)
            self.interrupted = bool(flag)
        return self.interrupted

    def _check_finite(self, first_bad_step: torch.Tensor) -> None:
        bad = int(first_bad_step)
        if distributed.is_distributed():  # every rank stops together when any rank's loss is non-finite
            flag = (first_bad_step >= 0).long()
            distributed.all_reduce_sum(flag)
            if bad < 0 and bool(flag):
                raise NonFiniteLossError(
                    f"the training loss became non-finite on another process in epoch {self.state.epoch + 1}; "
                    f"training stopped and the checkpoints of epoch {self.state.epoch} are kept"
                )
        if bad >= 0:
            raise NonFiniteLossError(
                f"the training loss became non-finite at epoch {self.state.epoch + 1}, step {bad + 1}; training "
                f"stopped and the checkpoints of epoch {self.state.epoch} are kept. Lower train.lr, check the "
                f"data, or turn off mixed precision (train.amp=off)"
            )

    # -- loop --------------------------------------------------------------------------------
    def _reseed_shuffle(self, loader: DataLoader, skip_batches: int) -> None:
        """Each epoch's order and augmentation depend on (seed, epoch) only (``EpochSampler.set_epoch``), so a
        resumed run sees the batches it would have, and the sampler leaves out the ``skip_batches`` already
        done. Loaders without ``set_epoch`` (benchmarks) keep their own order and cannot resume mid-epoch.
        Under ``torchrun`` each rank's own random streams (dropout, mixup) are reseeded from (seed, rank, epoch)."""
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.state.epoch, skip=skip_batches * loader.batch_size)
        elif skip_batches:
            raise ValueError(f"cannot resume mid-epoch: the training loader's sampler "
                             f"({type(loader.sampler).__name__}) has no set_epoch(epoch, skip)")
        if distributed.is_distributed():
            distributed.seed_rank_epoch(self.config.seed, self.state.epoch)

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        train_mode(self.model)
        partial, skip = self.state.partial, self.state.step
        self._reseed_shuffle(loader, skip)
        device = self.precision.device
        total_loss = partial.get("loss", torch.zeros(())).to(device)
        correct = partial.get("correct", torch.zeros((), dtype=torch.long)).to(device)
        seen = int(partial.get("seen", 0))
        first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        bar = tqdm(loader, desc=f"epoch {self.state.epoch + 1}/{self.config.epochs}", disable=not self.progress,
                   leave=False, unit="batch", initial=skip, total=skip + len(loader))
        for step, batch in enumerate(bar, start=skip):  # the sampler left out the steps done before an interrupt
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            mix = BatchMix.draw(labels.shape[0], self.config.mixup_alpha) if self.config.mixup_alpha > 0 else None
            if mix is not None:
                images = mix.images(images)
            with self.precision.autocast():
                loss, logits = self.objective(self.train_model, images, labels, batch["key"], mix)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total_loss += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            # Recorded on the device and read every log_every steps: no wait for the GPU on each step.
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step, first_bad_step)
            if step % self.config.log_every == 0:
                self._check_finite(first_bad_step)
                if self.progress:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            agree = not distributed.is_distributed() or step % self.config.log_every == 0
            if agree and self._interrupt_agreed():
                self._check_finite(first_bad_step)
                self.state.partial = {"loss": total_loss.cpu(), "correct": correct.cpu(), "seen": seen}
                self._stop_if_interrupted(step + 1)
        self._check_finite(first_bad_step)
        self.state.step, self.state.partial = 0, {}
        if seen == 0:
            raise ValueError("the training loader produced no batches; is the training split empty?")
        counted = torch.tensor(seen, device=device)
        distributed.all_reduce_sum(total_loss, correct, counted)  # the epoch's figures over all ranks
        distributed.average_buffers(self.model)
        if self.ema is not None:
            distributed.average_buffers(self.ema.module)
        return {"train_loss": float(total_loss) / int(counted), "train_accuracy": float(correct) / int(counted)}

    def validate(self, loader: DataLoader) -> dict[str, float]:
        predictions = predict(self.eval_model, loader, self.precision, self.input_size, desc="validate",
                              across_ranks=True)
        with warnings.catch_warnings():
            # Early epochs often predict one class only; the NaN it gives is recorded, the warning is noise.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            metrics = binary_metrics(predictions.labels, predictions.prob_positive)
        metrics["loss"] = predictions.mean_cross_entropy()
        return {f"val_{name}": float(value) for name, value in metrics.items()}

    def fit(self, loaders: dict[str, DataLoader]) -> TrainState:
        """Train until ``epochs`` or early stopping; returns the final state (history included)."""
        with self._stop_on_sigint():
            self._fit(loaders)
            self._stop_if_interrupted()
        return self.state

    def _fit(self, loaders: dict[str, DataLoader]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        while not self.state.finished(config.epochs):
            self._stop_if_interrupted()
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": self.state.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(loaders["train"]))
            self.scheduler.step()
            row.update(self.validate(loaders["val"]))
            row["seconds"] = round(time.perf_counter() - started, 3)
            self.state.epoch += 1
            value = row[config.monitor]
            if self.state.improved(value, config.monitor):
                self.state.best_value, self.state.best_epoch = value, self.state.epoch
                self.state.epochs_without_improvement = 0
                if distributed.is_main_process():
                    save_checkpoint(self.best_path, self.saved_model, {**self.metadata, "metrics": row})
            else:
                self.state.epochs_without_improvement += 1
            patience = config.early_stopping_patience
            self.state.stopped_early = patience is not None and self.state.epochs_without_improvement >= patience
            # The row is logged before the resume state is saved: a kill between the two then repeats the
            # epoch (``resume`` drops rows after the saved epoch) instead of losing its row.
            self.state.history.append(row)
            self._write_metrics()
            due = self.state.finished(config.epochs) or self.state.epoch % config.checkpoint_every == 0
            if distributed.is_main_process() and due:
                save_checkpoint(self.last_path, self.saved_model, {**self.metadata, "metrics": row},
                                self._training_state())
                self.state_saved_at = self.state.epoch
            if self.progress:
                shown = {k: row[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in row}
                tqdm.write(f"epoch {row['epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
                if self.state.stopped_early:
                    tqdm.write(f"early stop: no {config.monitor} improvement for {patience} epochs")


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch: the paper's step decay, or cosine decay to 0 over ``epochs``, after an optional
    linear warm-up over ``warmup_epochs`` (for the larger learning rates of many processes).

    Both are closed-form in the epoch (a ``LambdaLR``), so a resumed run — even one whose ``epochs`` was
    raised — recomputes its learning rate from the configuration instead of trusting a stored one.
    """
    epochs, step_size, gamma, warmup = max(1, config.epochs), config.step_size, config.gamma, config.warmup_epochs

    def decay(epoch: int) -> float:
        if config.schedule == "cosine":
            return (1 + math.cos(math.pi * epoch / epochs)) / 2
        return gamma ** (epoch // step_size)

    def factor(epoch: int) -> float:
        return decay(epoch) * min(1.0, (epoch + 1) / (warmup + 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_ema(model: nn.Module, decay: float | None, warmup: bool = False) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics, updated every step.

    With ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``: the average starts
    close to the current weights and reaches ``decay`` after ~``10 / (1 - decay)`` steps.
    """
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"train.ema_decay must lie strictly between 0 and 1, got {decay}")
    return AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=True)


def ema_multi_avg_fn(
    decay: float, warmup: bool
) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """``AveragedModel``'s update: float tensors move towards the model, counters are copied.

    (torch's own EMA update would blend BatchNorm's integer ``num_batches_tracked`` and truncate it.) The
    warm-up decay is computed from the update count as a tensor, so it costs no device synchronisation.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
        elif not warmup:
            torch._foreach_lerp_(averaged, current, 1 - decay)
        else:
            weight = 1 - torch.clamp((1 + updates) / (10 + updates), max=decay)
            for average, value in zip(averaged, current, strict=True):
                average.lerp_(value, weight.to(average.dtype))

    return update


