"""The training loop: SGD with momentum, step or cosine schedule, AMP, mixup, weight averaging (EMA),
checkpoints, resume and early stopping.

The loop knows nothing about what it minimises (see ``objectives``) or where batches come from; it
owns the bookkeeping that must be right for every experiment. The loss is accumulated on the device
and read once per ``log_every`` steps, so the CPU never waits for the GPU on each step.

Every epoch writes ``last.pt`` (and ``best.pt`` when the monitored validation metric improves)
atomically, then appends a line to ``metrics.jsonl``. With ``ema_decay`` set, validation and the saved
weights are the moving average (what gets deployed); the raw weights travel in the training state.
``resume=True`` restores model, optimiser, scheduler, gradient scaler, moving average, early-stopping
state and random-number generators from ``last.pt``.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrdistill.config import ConfigError, TrainConfig
from cxrdistill.evaluation.metrics import binary_metrics
from cxrdistill.evaluation.predict import predict
from cxrdistill.files import atomic_write_text
from cxrdistill.models import train_mode
from cxrdistill.training import distributed
from cxrdistill.training.checkpoint import load_checkpoint, save_checkpoint
from cxrdistill.training.device import Precision
from cxrdistill.training.objectives import BatchMix, Objective

MINIMISED = {"val_loss"}


def seed_everything(seed: int) -> None:
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

    def improved(self, value: float, monitor: str) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        return value < self.best_value if monitor in MINIMISED else value > self.best_value


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
        self.ema = make_ema(self.model, config.ema_decay)
        self.scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.needs_grad_scaler)
        self.state = TrainState()

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

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
            "raw_model": self.model.state_dict() if self.ema is not None else None,
            "ema_updates": int(self.ema.n_averaged) if self.ema is not None else None,
            "epoch": self.state.epoch,
            "best_value": self.state.best_value,
            "best_epoch": self.state.best_epoch,
            "epochs_without_improvement": self.state.epochs_without_improvement,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": list(random.getstate()[1])},
            "stopped_early": self.state.stopped_early,
        }

    def resume(self) -> None:
        """Continue from ``last.pt``; metrics lines of epochs after it (a run killed mid-write) are dropped."""
        payload = load_checkpoint(self.last_path)
        saved_arch = payload["metadata"]["architecture"]
        if saved_arch != self.metadata["architecture"]:
            raise ValueError(
                f"{self.last_path} is a {saved_arch} checkpoint but the config trains {self.metadata['architecture']}"
            )
        saved = payload["training_state"]
        if self.ema is not None:
            if saved.get("raw_model") is None:
                raise ValueError(f"{self.last_path} was trained without train.ema_decay; resume it without EMA")
            self.ema.module.load_state_dict(payload["model_state"])
            self.ema.n_averaged.fill_(saved["ema_updates"])
        self.model.load_state_dict(saved.get("raw_model") or payload["model_state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        base_lrs = self.scheduler.base_lrs  # this run's (``lr_scaling`` may scale it by another world size)
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scheduler.base_lrs = base_lrs
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scaler.load_state_dict(saved["scaler"])
        self.state.epoch = saved["epoch"]
        self.state.best_value = saved["best_value"]
        self.state.best_epoch = saved["best_epoch"]
        self.state.epochs_without_improvement = saved["epochs_without_improvement"]
        torch.set_rng_state(saved["rng"]["torch"])
        numpy_state = saved["rng"]["numpy"]
        np.random.set_state(("MT19937", numpy_state[:-1].numpy().astype(np.uint32), int(numpy_state[-1]), 0, 0.0))
        self.state.stopped_early = saved["stopped_early"]
        random.setstate((3, tuple(saved["rng"]["python"]), None))
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
        self.state.history = [row for row in map(json.loads, lines) if row["epoch"] <= self.state.epoch]
        if distributed.is_main_process():
            atomic_write_text(self.metrics_path, "".join(json.dumps(row) + "\n" for row in self.state.history))

    # -- loop --------------------------------------------------------------------------------
    def _reseed_shuffle(self, loader: DataLoader) -> None:
        """Each epoch's order and augmentation depend on (seed, epoch) only (``EpochSampler.set_epoch``), so a
        resumed run sees the batches it would have. Loaders without ``set_epoch`` (benchmarks) keep their own.
        Under ``torchrun`` each rank's own random streams (dropout, mixup) are reseeded from (seed, rank, epoch)."""
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.state.epoch)
        if distributed.is_distributed():
            distributed.seed_rank_epoch(self.config.seed, self.state.epoch)

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        train_mode(self.model)
        self._reseed_shuffle(loader)
        device = self.precision.device
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(loader, desc=f"epoch {self.state.epoch + 1}/{self.config.epochs}", disable=not self.progress,
                   leave=False, unit="batch")
        for step, batch in enumerate(bar):
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
            if self.progress and step % self.config.log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        while self.state.epoch < config.epochs and not self.state.stopped_early:
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
            if distributed.is_main_process():
                save_checkpoint(self.last_path, self.saved_model, {**self.metadata, "metrics": row},
                                self._training_state())
                with open(self.metrics_path, "a") as stream:
                    stream.write(json.dumps(row) + "\n")
            self.state.history.append(row)
            if self.progress:
                shown = {k: row[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in row}
                tqdm.write(f"epoch {row['epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
                if self.state.stopped_early:
                    tqdm.write(f"early stop: no {config.monitor} improvement for {patience} epochs")
        return self.state


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


def make_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics, updated every step."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"train.ema_decay must lie strictly between 0 and 1, got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _numpy_rng_state() -> torch.Tensor:
    """numpy's Mersenne-Twister key and position as one tensor (checkpoints hold tensors, not arrays)."""
    _, key, position, *_ = np.random.get_state()
    return torch.from_numpy(np.append(key.astype(np.int64), position))

