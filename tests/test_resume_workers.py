"""With loader worker processes (the default), each epoch's batches and augmentation depend on (seed, epoch)
only: a stopped and resumed run ends with the weights of an uninterrupted one, whatever the worker count."""

import pytest
import torch
from conftest import tiny_config

from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model


def train(synth_root, workdir, epochs: int, workers: int, resume: bool = False):
    # Geometric and intensity augmentation both draw random numbers in the workers.
    config = tiny_config(synth_root, workdir, f"train.epochs={epochs}", f"data.num_workers={workers}",
                         "data.brightness=0.3", "data.noise_std=0.02")
    return load_checkpoint(run_experiment(config, resume=resume, progress=False).last_checkpoint)["model_state"]


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], msg=f"{name} differs")


@pytest.fixture(scope="module")
def uninterrupted(synth_root, tmp_path_factory):
    """Three epochs straight, with two loader workers."""
    return train(synth_root, tmp_path_factory.mktemp("straight"), epochs=3, workers=2)


def test_resume_with_workers_gives_the_uninterrupted_weights(synth_root, tmp_path, uninterrupted):
    train(synth_root, tmp_path, epochs=2, workers=2)
    assert_same_weights(train(synth_root, tmp_path, epochs=3, workers=2, resume=True), uninterrupted)


def test_weights_do_not_depend_on_the_worker_count(synth_root, tmp_path, uninterrupted):
    """``data.num_workers=-1`` sizes the loader to the machine; the result must not depend on it."""
    assert_same_weights(train(synth_root, tmp_path, epochs=3, workers=0), uninterrupted)
