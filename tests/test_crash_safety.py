"""Crash safety with real processes: a training run killed at random moments and resumed ends with the
weights of an uninterrupted run, bit for bit; Ctrl-C stops cleanly and resumes exactly; a NaN loss stops."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import save_config
from cxrdistill.experiments.run import resume_state_path, run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint, load_training_state
from cxrdistill.training.objectives import SupervisedObjective
from cxrdistill.training.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.slow  # every test here trains a model

EPOCHS = 5
CRASH_SETTINGS = ("train.deterministic=true", f"train.epochs={EPOCHS}", "train.threads=1", "evaluation.n_bootstrap=5")
CHILD_TIMEOUT_S = 900
"""Generous: on a machine loaded by other jobs a tiny run can take minutes."""


def crash_config(synth_root: Path, workdir: Path):
    return tiny_config(synth_root, workdir, *CRASH_SETTINGS)


def run_in_this_process(config, resume: bool = False):
    threads = torch.get_num_threads()
    try:
        return run_experiment(config, resume=resume, progress=False)
    finally:
        torch.set_num_threads(threads)  # train.threads=1 must not slow the rest of the suite


def outcome(run_dir: Path) -> dict:
    """What must not depend on interruptions: the weights' hashes and the metrics (timings aside)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"best": load_checkpoint(run_dir / "best.safetensors")["sha256"],
            "last": load_checkpoint(run_dir / "last.safetensors")["sha256"],
            "metrics": [{k: v for k, v in row.items() if k != "seconds"} for row in rows]}


@pytest.fixture(scope="module")
def uninterrupted(synth_root, tmp_path_factory) -> dict:
    result = run_in_this_process(crash_config(synth_root, tmp_path_factory.mktemp("uninterrupted")))
    return outcome(result.run_dir)


def start_training(config_path: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "cxrdistill", "train", "-c", str(config_path), "--quiet"]
    return subprocess.Popen(command + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def epochs_logged(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def wait_for(condition, child: subprocess.Popen) -> bool:
    """Poll until ``condition()`` holds; False when the child ended first."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not condition():
        if child.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the training child made no progress"
        time.sleep(0.05)
    return True


def test_killed_three_times_at_random_moments_ends_bit_identical(synth_root, tmp_path, uninterrupted):
    config = crash_config(synth_root, tmp_path)
    save_config(config, tmp_path / "config.yaml")
    run_dir, state = config.run_dir, resume_state_path(config)
    delays = random.Random(20261129)
    kills = []
    for kill in range(3):
        child = start_training(tmp_path / "config.yaml", resume=state.is_file())
        logged = epochs_logged(run_dir)
        # The first child is killed once it is set up, the next ones once they have finished an epoch of their own,
        # each after a random further delay: in a step, in validation, or while writing checkpoints.
        started = (lambda: (run_dir / "config.yaml").is_file()) if kill == 0 else (
            lambda logged=logged: epochs_logged(run_dir) > logged)
        if not wait_for(started, child):
            break
        time.sleep(delays.uniform(0.0, 1.5))
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT_S)
        kills.append(epochs_logged(run_dir))
    final = start_training(tmp_path / "config.yaml", resume=state.is_file())
    _, stderr = final.communicate(timeout=CHILD_TIMEOUT_S)
    assert final.returncode == 0, stderr
    assert len(kills) >= 2, f"the children finished before they could be killed ({kills})"
    assert outcome(run_dir) == uninterrupted


class SimulatedKill(BaseException):
    """Ends the run where it is raised, as a SIGKILL would: no handler in the trainer catches it."""


def test_killed_the_moment_an_epochs_resume_state_is_written_loses_no_metrics_row(synth_root, tmp_path,
                                                                                  uninterrupted, monkeypatch):
    """The narrowest window at an epoch's end, hit on purpose (the random kills above reach it rarely): the
    process dies as soon as epoch 2's ``last.safetensors`` with its training state is on disk."""
    import cxrdistill.training.trainer as trainer_module

    real_save, saved = trainer_module.save_checkpoint, []

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        saved.append(Path(path).name)
        if saved.count("last.safetensors") == 2:
            raise SimulatedKill

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)
    config = crash_config(synth_root, tmp_path)
    with pytest.raises(SimulatedKill):
        run_in_this_process(config)
    monkeypatch.undo()
    assert load_training_state(config.run_dir / "last.safetensors")["epoch"] == 2
    run_in_this_process(config, resume=True)
    assert outcome(config.run_dir) == uninterrupted


def test_ctrl_c_stops_after_a_step_saves_and_resumes_exactly(synth_root, tmp_path, uninterrupted):
    config = crash_config(synth_root, tmp_path)
    save_config(config, tmp_path / "config.yaml")
    child = start_training(tmp_path / "config.yaml", resume=False)
    assert wait_for(lambda: epochs_logged(config.run_dir) >= 1, child), child.communicate()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    assert child.returncode == 130, stderr
    assert "interrupted at" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved = load_training_state(config.run_dir / "last.safetensors")
    assert 1 <= saved["epoch"] < EPOCHS
    if saved["step"]:  # stopped mid-epoch (not in validation): the message names that step
        assert f"epoch {saved['epoch'] + 1}, step {saved['step']}" in " ".join(stderr.split())
    run_in_this_process(config, resume=True)
    assert outcome(config.run_dir) == uninterrupted


def test_non_finite_loss_stops_training_naming_epoch_and_step(synth_root, tmp_path, monkeypatch):
    real_call, real_epoch = SupervisedObjective.__call__, Trainer.train_epoch
    calls, batches = [], []
    poisoned_call = 8

    def poisoned(self, *args, **kwargs):
        loss, logits = real_call(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == poisoned_call else loss), logits

    def counting_batches(self, loader):
        batches.append(len(loader))
        return real_epoch(self, loader)

    monkeypatch.setattr(SupervisedObjective, "__call__", poisoned)
    monkeypatch.setattr(Trainer, "train_epoch", counting_batches)
    config = tiny_config(synth_root, tmp_path, "train.epochs=3", "train.log_every=100")  # checked at the epoch's end
    with pytest.raises(NonFiniteLossError) as error:
        run_experiment(config, progress=False)
    epoch, step = divmod(poisoned_call - 1, batches[0])
    assert f"non-finite at epoch {epoch + 1}, step {step + 1}" in str(error.value)
    assert len(batches) == epoch + 1  # it stopped in that epoch
    if epoch:  # the epochs before it were kept
        assert load_training_state(config.run_dir / "last.safetensors")["epoch"] == epoch
