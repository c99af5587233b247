"""``train.deterministic``: one seed, two separate processes, bit-identical weights on CPU."""

import hashlib
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import save_config
from cxrdistill.runtime.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model


def weights_digest(path) -> str:
    state = load_checkpoint(path)["model_state"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode() + state[key].numpy().tobytes())
    return digest.hexdigest()


def train_in_fresh_process(config_path) -> None:
    code = ("import sys; from cxrdistill.config import load_config; "
            "from cxrdistill.experiments.run import run_experiment; "
            "run_experiment(load_config(sys.argv[1]), progress=False)")
    subprocess.run([sys.executable, "-c", code, str(config_path)], check=True, timeout=1200)  # generous: shared CI


def test_deterministic_training_gives_identical_weights_in_two_processes(synth_root, tmp_path):
    digests = []
    for name in ("first", "second"):
        # Loader workers, augmentation (geometric and intensity) and mixup all draw random numbers.
        config = tiny_config(synth_root, tmp_path, f"name={name}", "train.deterministic=true", "data.num_workers=1",
                             "data.brightness=0.2", "train.mixup_alpha=0.2", "train.threads=2")
        save_config(config, tmp_path / f"{name}.yaml")
        train_in_fresh_process(tmp_path / f"{name}.yaml")
        digests.append(weights_digest(config.run_dir / "last.safetensors"))
    assert digests[0] == digests[1]
    assert not torch.are_deterministic_algorithms_enabled()  # nothing leaked into this process
