"""The trainer end to end on tiny synthetic data: metrics, checkpoints, resume, refusals."""

import json
import math

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import ConfigError, TrainConfig
from cxrdistill.evaluation.predict import predict
from cxrdistill.experiments.run import RunDirectoryError, run_experiment
from cxrdistill.runtime.checkpoint import (
    CheckpointError,
    experiment_config,
    load_checkpoint,
    load_training_state,
    model_from_checkpoint,
)
from cxrdistill.runtime.device import resolve_device, resolve_precision
from cxrdistill.training.objectives import SupervisedObjective, class_weights
from cxrdistill.training.trainer import Trainer, TrainingInterrupted, make_scheduler


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_writes_metrics_and_self_describing_checkpoints(synth_root, tmp_path):
    config = tiny_config(synth_root, tmp_path)
    result = run_experiment(config, progress=False)
    rows = read_metrics(result.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_sensitivity", "val_specificity", "val_roc_auc", "lr"):
        assert key in rows[0]
    assert (result.run_dir / "config.yaml").is_file() and result.best_checkpoint.is_file()
    metadata = load_checkpoint(result.best_checkpoint)["metadata"]
    assert metadata["architecture"] == "resnet18" and metadata["input_size"] == 32
    assert metadata["class_names"] == ["NORMAL", "PNEUMONIA"] and metadata["normalization"]["mean"][0] == 0.485
    assert reloaded_val_loss(result) == pytest.approx(metadata["metrics"]["val_loss"], rel=1e-5)


def reloaded_val_loss(result):
    """Validation loss of the best model reloaded from its checkpoint, on the run's own device and
    precision: equal to the loss the live model scored when it was saved, if the reload is faithful."""
    model, metadata = model_from_checkpoint(result.best_checkpoint)
    config = experiment_config(load_checkpoint(result.best_checkpoint))
    precision = resolve_precision(resolve_device(config.train.device), config.train.amp)
    predictions = predict(model.to(precision.device), result.bundle.loaders["val"], precision, metadata["input_size"])
    return predictions.mean_cross_entropy()


def run_model_weights(path):
    return load_checkpoint(path)["model_state"]["conv1.weight"]


def scheduled_lrs(epochs: int, **settings) -> list[float]:
    """The learning rate of each epoch as the trainer's scheduler sets it (stepped once per epoch)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = make_scheduler(optimizer, TrainConfig(epochs=epochs, **settings))
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_lr_decays_each_step_size():
    assert scheduled_lrs(5, step_size=2, gamma=0.5) == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_cosine_schedule_decays_to_zero_over_the_run():
    assert scheduled_lrs(3, schedule="cosine") == pytest.approx(
        [0.01 * (1 + math.cos(math.pi * epoch / 3)) / 2 for epoch in range(3)])


def test_warmup_ramps_linearly_into_the_schedule():
    assert scheduled_lrs(4, step_size=3, gamma=0.5, warmup_epochs=2) == pytest.approx(
        [0.01 / 3, 0.02 / 3, 0.01, 0.005])


@pytest.mark.slow
def test_resume_continues_where_the_run_stopped(synth_root, tmp_path):
    first = run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), progress=False)
    saved = load_training_state(first.last_checkpoint)
    assert saved["epoch"] == 1
    # A run killed after writing a metrics line for an epoch it never checkpointed:
    with open(first.run_dir / "metrics.jsonl", "a") as stream:
        stream.write(json.dumps({"epoch": 2, "val_loss": 0.0}) + "\n")
    resumed = run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=3"), resume=True, progress=False)
    rows = read_metrics(resumed.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["val_loss"] != 0.0  # the orphan line was replaced by the real epoch 2
    assert load_training_state(resumed.last_checkpoint)["epoch"] == 3


@pytest.mark.slow
def test_resume_is_deterministic(synth_root, tmp_path):
    """Two epochs straight equal one epoch, a stop, and a resume: optimiser, scheduler and RNG are restored."""
    straight = run_experiment(tiny_config(synth_root, tmp_path / "a", "train.epochs=2"), progress=False)
    run_experiment(tiny_config(synth_root, tmp_path / "b", "train.epochs=1"), progress=False)
    resumed = run_experiment(tiny_config(synth_root, tmp_path / "b", "train.epochs=2"), resume=True, progress=False)
    assert torch.allclose(run_model_weights(straight.last_checkpoint), run_model_weights(resumed.last_checkpoint))


@pytest.mark.slow
def test_existing_run_is_never_overwritten(synth_root, tmp_path):
    config = tiny_config(synth_root, tmp_path, "train.epochs=1")
    first = run_experiment(config, progress=False)
    before = first.last_checkpoint.read_bytes()
    with pytest.raises(RunDirectoryError, match="--resume"):
        run_experiment(config, progress=False)
    assert first.last_checkpoint.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="no .*last.state.pt"):
        run_experiment(tiny_config(synth_root, tmp_path, "name=other"), resume=True, progress=False)


@pytest.mark.slow
def test_resume_refuses_another_architecture(synth_root, tmp_path):
    run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), progress=False)
    with pytest.raises(RunDirectoryError, match="model.name: 'resnet18' -> 'resnet34'"):
        run_experiment(tiny_config(synth_root, tmp_path, "model.name=resnet34"), resume=True, progress=False)


@pytest.mark.slow
def test_early_stopping_and_sampler(synth_root, tmp_path, monkeypatch):
    # A validation loss that never improves after epoch 1 (a real one moves with BatchNorm statistics even at lr 0).
    monkeypatch.setattr(Trainer, "validate", lambda self, loader: {"val_loss": 1.0, "val_accuracy": 0.5})
    config = tiny_config(synth_root, tmp_path, "train.epochs=6", "train.early_stopping_patience=1",
                         "train.class_balance=sampler")
    result = run_experiment(config, progress=False)
    assert len(read_metrics(result.run_dir)) == 2 and result.state.stopped_early


def test_class_weights_and_aux_loss():
    weights = class_weights([100, 300])
    assert weights.tolist() == pytest.approx([2.0, 2 / 3])
    objective = SupervisedObjective(weights)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    assert objective.hard_loss(logits, labels) == pytest.approx(expected.item())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a checkpoint")
    path.with_suffix(".json").write_text("{}")
    with pytest.raises(CheckpointError, match="no 'cxrdistill-checkpoint/2' marker"):
        load_checkpoint(path)
    path.with_suffix(".json").write_text("not json")
    with pytest.raises(CheckpointError, match="not a readable checkpoint sidecar"):
        load_checkpoint(path)


@pytest.mark.slow
def test_srm_frontend_trains_and_reloads(synth_root, tmp_path):
    config = tiny_config(synth_root, tmp_path, "model.frontend=srm", "train.epochs=1")
    result = run_experiment(config, progress=False)
    payload = load_checkpoint(result.best_checkpoint)
    assert payload["metadata"]["frontend"] == "srm"
    assert any(key.startswith("frontend.") for key in payload["model_state"])
    assert reloaded_val_loss(result) == pytest.approx(payload["metadata"]["metrics"]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_resume_state_every_n_epochs_and_always_on_interrupt(synth_root, tmp_path, monkeypatch):
    """``checkpoint_every`` thins the resume states (the final epoch always saves); an interrupt at an epoch
    boundary whose state was skipped writes it, and the resumed run ends where a straight one does."""
    import cxrdistill.training.trainer as trainer_module

    saved_epochs, real_save = [], trainer_module.save_checkpoint

    def recording_save(path, model, metadata, state=None):
        if state is not None:
            saved_epochs.append(state["epoch"])
        return real_save(path, model, metadata, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", recording_save)
    straight = run_experiment(tiny_config(synth_root, tmp_path / "a", "train.epochs=3", "train.checkpoint_every=2"),
                              progress=False)
    assert saved_epochs == [2, 3]

    real_validate = Trainer.validate

    def interrupt_after_epoch_one(self, loader):
        self.interrupted = self.interrupted or self.state.epoch == 0
        return real_validate(self, loader)

    monkeypatch.setattr(Trainer, "validate", interrupt_after_epoch_one)
    config = tiny_config(synth_root, tmp_path / "b", "train.epochs=3", "train.checkpoint_every=2")
    with pytest.raises(TrainingInterrupted, match="end of epoch 1"):
        run_experiment(config, progress=False)
    assert load_training_state(config.run_dir / "last.safetensors")["epoch"] == 1
    monkeypatch.setattr(Trainer, "validate", real_validate)
    resumed = run_experiment(config, resume=True, progress=False)
    assert torch.allclose(run_model_weights(straight.last_checkpoint), run_model_weights(resumed.last_checkpoint))


def test_checkpoint_every_must_be_positive(tmp_path):
    precision = resolve_precision(torch.device("cpu"), "off")
    with pytest.raises(ConfigError, match="checkpoint_every must be at least 1"):
        Trainer(torch.nn.Linear(2, 2), SupervisedObjective(), TrainConfig(checkpoint_every=0), precision, tmp_path,
                {}, 8, progress=False)


def test_training_state_restores_every_random_stream(tmp_path):
    """torch, numpy (with its cached Gaussian) and Python's ``random`` (with ``gauss_next``) continue exactly."""
    import random

    import numpy as np

    from cxrdistill.runtime.checkpoint import save_training_state
    from cxrdistill.runtime.random_state import capture_random_state, restore_random_state

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal(), random.gauss(0.0, 1.0)  # each leaves half a Box-Muller pair cached
    state = tmp_path / "last.state.pt"
    save_training_state(state, {"rng": capture_random_state()}, {"architecture": "none"})

    def draws():
        return (torch.rand(3).tolist(), np.random.standard_normal(3).tolist(), np.random.random_sample(),
                random.gauss(0.0, 1.0), random.random())

    expected = draws()
    draws()
    restore_random_state(load_training_state(state)["rng"])
    assert draws() == expected


def test_mid_epoch_resume_skips_done_batches_in_the_sampler(synth_root, tmp_path, monkeypatch):
    """Resuming after step 2 of an epoch reads only the rest of that epoch and ends with the weights of an
    uninterrupted run."""
    from cxrdistill.data.dataset import XRayDataset

    settings = ("train.epochs=1", "train.deterministic=true", "data.max_per_class=12")
    real_getitem, real_call = XRayDataset.__getitem__, SupervisedObjective.__call__
    training_reads = []

    def counting_getitem(self, index):
        if isinstance(index, tuple):  # the training sampler's (augmentation seed, index) draws
            training_reads.append(index)
        return real_getitem(self, index)

    monkeypatch.setattr(XRayDataset, "__getitem__", counting_getitem)
    straight = run_experiment(tiny_config(synth_root, tmp_path / "a", *settings), progress=False)
    uninterrupted_reads = list(training_reads)

    steps = []

    def interrupting_call(self, model, *args, **kwargs):
        steps.append(1)
        trainer = next(t for t in trainers if t.objective is self)
        trainer.interrupted = len(steps) == 2
        return real_call(self, model, *args, **kwargs)

    trainers = []
    real_init = Trainer.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trainers.append(self)

    monkeypatch.setattr(Trainer, "__init__", recording_init)
    monkeypatch.setattr(SupervisedObjective, "__call__", interrupting_call)
    config = tiny_config(synth_root, tmp_path / "b", *settings)
    with pytest.raises(TrainingInterrupted, match="step 2"):
        run_experiment(config, progress=False)
    monkeypatch.setattr(SupervisedObjective, "__call__", real_call)
    training_reads.clear()
    resumed = run_experiment(config, resume=True, progress=False)
    batch_size = config.data.batch_size
    assert training_reads == uninterrupted_reads[2 * batch_size:]
    assert torch.equal(run_model_weights(straight.last_checkpoint), run_model_weights(resumed.last_checkpoint))
