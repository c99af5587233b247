"""One experiment from a config: data, model, objective, trainer — the Python API behind ``cxrdistill train``.

With ``distill.teacher`` set the same config distils (the KD objective replaces plain cross-entropy);
without it the model trains on the labels alone, as in torchdistill. Started by ``torchrun`` with
several processes, the same call trains one model with DistributedDataParallel (see ``distributed``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cxrdistill.config import (
    NOT_STORED,
    ConfigError,
    ExperimentConfig,
    config_differences,
    config_digest,
    flat_settings,
    save_config,
)
from cxrdistill.data.dataset import DataBundle, build_loaders
from cxrdistill.data.splits import split_digest
from cxrdistill.data.synth import SynthSpec, is_complete_synthetic_set, make_synthetic_dataset
from cxrdistill.deployment.ood import fit_ood
from cxrdistill.distillation.objective import build_objective, data_image_size
from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.calibrate import choose_on_val
from cxrdistill.evaluation.evaluate import evaluate_run
from cxrdistill.files import atomic_write_text, text_digest
from cxrdistill.models import create_model, input_size
from cxrdistill.runtime import distributed
from cxrdistill.runtime.checkpoint import (
    WEIGHTS_SUFFIX,
    checkpoint_metadata,
    load_training_state,
    training_state_path,
)
from cxrdistill.runtime.device import resolve_device, resolve_precision
from cxrdistill.training.objectives import SupervisedObjective, class_weights
from cxrdistill.training.trainer import Trainer, TrainState, seed_everything


class RunDirectoryError(CxrDistillError, FileExistsError):
    """Refusing to overwrite an earlier run's checkpoints, or to continue it with other settings."""


class MissingDataError(CxrDistillError, ValueError):
    """A run with no ``data.root`` that did not ask for the synthetic set (``data.synthetic``) either."""


class RunNotFoundError(CxrDistillError, FileNotFoundError):
    """``--resume`` was asked for but the run folder holds no ``last.state.pt``."""


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    state: TrainState
    bundle: DataBundle
    keep: str = "best"

    @property
    def final_checkpoint(self) -> Path:
        """The checkpoint this run hands on (``train.keep``): the best by the monitored metric, or the last."""
        return self.best_checkpoint if self.keep == "best" else self.last_checkpoint


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of one run (restored after, so notebooks are not left slow)."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def join_process_group(config: ExperimentConfig) -> torch.device:
    """This process's device, after joining ``torchrun``'s process group when there is one."""
    device = resolve_device(config.train.device)
    distributed.setup(device)
    return distributed.local_device(device)


def data_root(config: ExperimentConfig, progress: bool = True) -> Path:
    """The configured data folder, or the synthetic set when ``data.synthetic`` asks for it (made once, by rank 0).

    Neither is refused: a run must never train on made-up images because a setting was forgotten.
    """
    if config.data.root is not None and config.data.synthetic:
        raise ConfigError(f"data.root ({config.data.root}) and data.synthetic: true both name the data to train "
                          "on; keep one of them")
    if config.data.root is not None:
        return Path(config.data.root)
    if not config.data.synthetic:
        raise MissingDataError(
            "no data to train on: set data.root to a Kermany-layout folder (ROOT/train/{NORMAL,PNEUMONIA}/..., "
            "e.g. data.root=../data/chest_xray), or run `cxrdistill demo` to train on the bundled sample of real "
            "X-rays; for made-up images (a smoke test, not X-rays) ask for them with data.synthetic: true in the "
            "config or --synthetic on the command")
    join_process_group(config)  # sweeps and comparisons get here first
    root = Path(config.data.synthetic_dir)
    with distributed.main_process_first():
        if progress and distributed.is_main_process():
            print(f"data.synthetic: training on a SYNTHETIC data set in {root} (not real X-rays).")
        if not is_complete_synthetic_set(root):
            make_synthetic_dataset(root, SynthSpec(seed=config.data.split_seed))
    return root


def supervised_objective(config: ExperimentConfig, bundle: DataBundle) -> SupervisedObjective:
    weights = class_weights(bundle.class_counts()) if config.train.class_balance == "loss" else None
    return SupervisedObjective(weights, config.train.aux_loss_weight, config.train.label_smoothing)


def run_experiment(config: ExperimentConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Train (or distil) as configured; checkpoints, metrics and the config land in ``config.run_dir``."""
    with deterministic_algorithms(config.train.deterministic):
        return _run_experiment(config, resume, progress)


def resume_state_path(config: ExperimentConfig) -> Path:
    """``RUN_DIR/last.state.pt``: present once a run has saved anything to continue from."""
    return training_state_path(config.run_dir / f"last{WEIGHTS_SUFFIX}")


def _run_experiment(config: ExperimentConfig, resume: bool, progress: bool) -> RunResult:
    run_dir = config.run_dir
    device = join_process_group(config)
    progress = progress and distributed.is_main_process()
    state_path = resume_state_path(config)
    if state_path.exists() and not resume:
        raise RunDirectoryError(
            f"{run_dir} already holds a run ({state_path.name}); pass --resume to continue it, "
            f"or choose another name/output_dir — nothing was overwritten"
        )
    if resume and not state_path.exists():
        raise RunNotFoundError(f"--resume: no {state_path} to resume from")
    if resume:
        refuse_other_settings(config)
    seed_everything(config.train.seed)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    precision = resolve_precision(device, config.train.amp)
    size = input_size(config.model, config.data.image_size)
    train_size = data_image_size(config, size)
    root = data_root(config, progress)
    with distributed.main_process_first():  # rank 0 writes the split and fills the decoded-image cache
        bundle = build_loaders(
            config.data, root, size, config.train.seed,
            balance_sampler=config.train.class_balance == "sampler", pin_memory=device.type == "cuda",
            progress=progress, train_image_size=train_size,
            num_replicas=distributed.world_size(), rank=distributed.rank(),
        )
    model = create_model(config.model, image_size=size)
    objective = build_objective(config, bundle, supervised_objective(config, bundle), precision, size, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main_process():
        save_config(config, run_dir / "config.yaml")
    processes = distributed.world_size()
    metadata = {**checkpoint_metadata(config, size), "config_digest": config_digest(config),
                "split_digest": split_digest(bundle.split), "processes": processes,
                "synthetic_data": is_complete_synthetic_set(root)}
    # config.train.lr as stored; the optimiser gets it scaled by train.lr_scaling for this many processes
    train_config = dataclasses.replace(
        config.train, lr=distributed.effective_lr(config.train, config.data.batch_size, processes))
    trainer = Trainer(model, objective, train_config, precision, run_dir, metadata, size, progress)
    if resume:
        trainer.resume()
    state = trainer.fit(bundle.loaders)
    distributed.barrier()  # rank 0's checkpoints are on disk before every rank evaluates them
    handed_on = trainer.best_path if config.train.keep == "best" else trainer.last_path
    evaluated = run_dir / EVALUATED_FILE
    key = evaluation_key(config)
    if not (evaluated.is_file() and evaluated.read_text() == key):  # a finished run is not scored twice
        evaluate_after_training(config, bundle.split.root, [trainer.best_path, trainer.last_path], handed_on,
                                progress)
        if distributed.is_main_process():
            atomic_write_text(evaluated, key)
    distributed.barrier()  # and its evaluation and operating points before anyone reads them
    return RunResult(run_dir, trainer.best_path, trainer.last_path, state, bundle, config.train.keep)


EVALUATED_FILE = "evaluated.key"
"""Written after a run's evaluation: what it was done for, so reusing a finished run does not redo it."""


def evaluation_key(config: ExperimentConfig) -> str:
    """What a finished run's evaluation depends on: the run's settings, its length and the scoring settings."""
    scoring = {k: v for k, v in flat_settings(config).items()
               if k.startswith("evaluation.") or k in ("data.external", "train.keep", "train.epochs")}
    return text_digest(config_digest(config), scoring)


def handed_on_checkpoint(config: ExperimentConfig) -> Path:
    """The checkpoint a run hands on (``train.keep``), where it is (or will be) once trained."""
    return config.run_dir / f"{config.train.keep}{WEIGHTS_SUFFIX}"


def evaluate_after_training(
    config: ExperimentConfig, root: Path, checkpoints: list[Path], handed_on: Path, progress: bool = True
) -> None:
    """Store an operating point chosen on val in each checkpoint; evaluate the one handed on.

    The handed-on checkpoint is scored on the internal test split and on every ``data.external`` set
    (``evaluation.json`` and ``evaluation.{csv,md}`` in the run folder), and gets its out-of-distribution
    check (fitted on the train split, threshold on val: one more pass over both, without gradients).
    """
    settings = config.evaluation
    local = config.data  # this run's own settings on this machine: its split file and decoded-image cache
    for checkpoint in checkpoints:
        choose_on_val(checkpoint, root, settings, config.train.device, local_data=local)
    distributed.barrier()  # rank 0 has stored the operating points before any rank reads them back
    evaluate_run(handed_on, root, config.data.external, settings.n_bootstrap, config.train.device, local_data=local)
    if distributed.is_main_process():
        ood = fit_ood(handed_on, root, local_data=local).record
        if progress:
            print(f"out-of-distribution check of {handed_on.name}: threshold {ood['threshold']:.4g} "
                  f"({ood['threshold_rule']}), fitted in {ood['fit_seconds']:.0f} s")
    if progress:
        print(f"operating thresholds chosen on val ({settings.threshold_policy}); evaluation of {handed_on.name} "
              f"on test and external sets: {handed_on.parent / 'evaluation.md'}")
def refuse_other_settings(config: ExperimentConfig) -> None:
    """Continue (or reuse) the run in ``config.run_dir`` only with the settings it was trained with.

    Compared key by key with the config stored in its resume state; ``SETTINGS_FREE_TO_CHANGE`` (epochs,
    threads, workers, device, ...) may differ.
    """
    stored = load_training_state(resume_state_path(config))["metadata"]["config"]
    differences = config_differences(stored, config)
    if differences:
        listed = ", ".join(f"{key}: {old if old is NOT_STORED else repr(old)} -> {new!r}"
                           for key, (old, new) in differences.items())
        raise RunDirectoryError(
            f"{config.run_dir} holds a run trained with other settings ({listed}); it was neither continued "
            f"nor reused. Continue it with its own settings ({config.run_dir / 'config.yaml'}), or give this "
            f"run another name or output folder (sweeps and comparisons: another --out)"
        )


def train_or_resume(config: ExperimentConfig, progress: bool = True) -> Path:
    """Train, or continue the run already in ``config.run_dir`` (a no-op when it finished).

    Sweeps, comparisons and the demo call this so that re-running one continues where it stopped.
    """
    evaluated = config.run_dir / EVALUATED_FILE
    if evaluated.is_file() and evaluated.read_text() == evaluation_key(config):
        return handed_on_checkpoint(config)  # finished and scored with these settings: nothing to load or redo
    resume = resume_state_path(config).exists()
    return run_experiment(config, resume=resume, progress=progress).final_checkpoint
