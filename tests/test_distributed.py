"""Training on several processes: ``torchrun`` with two gloo (CPU) processes running the real command line.

One knowledge-distillation run goes 1 process (epoch 1) -> 2 processes (epochs 2-3, under ``torchrun``) ->
1 process (epoch 4), and is checked for: identical weights on both ranks after every epoch, one set of
files written (by rank 0), whole-split validation and test metrics equal to a single-process evaluation of
the same checkpoint, a teacher-logit cache computed in shares and merged, and resuming across world sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import ConfigError, TrainConfig
from cxrdistill.data.dataset import EpochSampler
from cxrdistill.evaluation.calibrate import choose_on_val
from cxrdistill.evaluation.evaluate import evaluate_run, predict_checkpoint
from cxrdistill.experiments.run import EVALUATED_FILE, run_experiment
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from cxrdistill.runtime.distributed import effective_lr
from cxrdistill.training.trainer import make_scheduler

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def torchrun(args: list[str], digests: Path) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 distributed_child.py ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXRDISTILL_TEST_DIGESTS": str(digests),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(TESTS / "distributed_child.py"), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_distillation_across_world_sizes(synth_root: Path, tmp_path: Path) -> None:
    teacher_config = tiny_config(synth_root, tmp_path, "name=teacher")
    torch.manual_seed(0)
    teacher = save_checkpoint(tmp_path / "teacher.pt", create_model(teacher_config.model, image_size=32),
                              checkpoint_metadata(teacher_config, 32))
    config = tiny_config(synth_root, tmp_path, "name=student", "train.epochs=1", "train.threads=1",
                         f"distill.teacher={teacher}", "distill.teacher_outputs=cached")
    run_experiment(config, progress=False)
    [cache_file] = (tmp_path / "cache" / "teacher-logits").iterdir()
    single_cache = torch.load(cache_file, weights_only=True)
    cache_file.unlink()  # the two processes must compute it again, each a share

    run_dir = config.run_dir
    digests = tmp_path / "digests"
    digests.mkdir()
    torchrun(["distill", "--teacher", str(teacher), "-c", str(run_dir / "config.yaml"), "--resume", "--quiet",
              "train.epochs=3"], digests)

    ranks = [read_jsonl(digests / f"rank{r}.jsonl") for r in (0, 1)]
    assert [row["epoch"] for row in ranks[0]] == [2, 3]
    assert ranks[0] == ranks[1]  # same weights and buffers on both ranks after each epoch, same batch count
    assert len({row["digest"] for row in ranks[0]}) == 2  # and they did train
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["best.safetensors", "best.json", "best.ood.safetensors", "last.safetensors", "last.json", "last.state.pt",
         "config.yaml", "metrics.jsonl", "evaluation.json", "evaluation.csv", "evaluation.md", EVALUATED_FILE])
    assert [row["epoch"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]  # one writer
    assert load_checkpoint(run_dir / "last.safetensors")["metadata"]["processes"] == 2

    merged = torch.load(cache_file, weights_only=True)
    assert merged["keys"] == single_cache["keys"]
    torch.testing.assert_close(merged["logits"], single_cache["logits"], rtol=1e-4, atol=1e-5)

    # Validation in the loop covered the whole val split, not rank 0's half.
    _, val_predictions, _, _ = predict_checkpoint(run_dir / "last.safetensors", synth_root, "val", "cpu",
                                                  progress=False)
    last_row = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last_row["val_loss"] == pytest.approx(val_predictions.mean_cross_entropy(), rel=1e-4)

    # The test evaluation (and the operating point chosen on val) after training equals a single-process one.
    distributed = json.loads((run_dir / "evaluation.json").read_text())
    again = tmp_path / "again"
    again.mkdir()
    for name in ("best.safetensors", "best.json"):
        shutil.copy(run_dir / name, again / name)
    choose_on_val(again / "best.safetensors", synth_root, config.evaluation, "cpu")
    single = evaluate_run(again / "best.safetensors", synth_root, n_bootstrap=20, device="cpu")
    assert set(distributed["sets"]) == set(single) == {"val", "test"}
    for name, evaluation in single.items():
        stored = distributed["sets"][name]
        assert stored["count"] == evaluation.count  # the whole split, not one process's share
        for result, stored_result in zip(evaluation.results, stored["results"], strict=True):
            assert stored_result["threshold"] == pytest.approx(result.threshold, rel=1e-4)
            assert stored_result["confusion"] == result.confusion
            for metric, estimate in result.metrics.items():
                assert stored_result["metrics"][metric]["value"] == pytest.approx(estimate.value, rel=1e-4, abs=1e-6,
                                                                                  nan_ok=True)

    # A checkpoint written by two processes resumes in one.
    resumed = run_experiment(tiny_config(synth_root, tmp_path, "name=student", "train.epochs=4", "train.threads=1",
                                         f"distill.teacher={teacher}", "distill.teacher_outputs=cached"),
                             resume=True, progress=False)
    assert resumed.state.epoch == 4
    assert [row["epoch"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    assert load_checkpoint(run_dir / "last.safetensors")["metadata"]["processes"] == 1


def test_epoch_sampler_shards_one_epoch_among_ranks() -> None:
    """Rank r takes every W-th draw of the single-process epoch, seeds included; shares are padded to one length."""
    dataset = range(10)
    whole = list(EpochSampler(torch.utils.data.RandomSampler(dataset), seed=3))
    for world in (2, 3):
        shares = [EpochSampler(torch.utils.data.RandomSampler(dataset), 3, world, r) for r in range(world)]
        drawn = [list(share) for share in shares]
        assert {len(share) for share in shares} == {len(d) for d in drawn} == {-(-10 // world)}
        interleaved = [pair for row in zip(*drawn, strict=True) for pair in row]
        assert interleaved[:10] == whole and interleaved[10:] == whole[: len(interleaved) - 10]
    share = EpochSampler(torch.utils.data.RandomSampler(dataset), 3, 2, 1)
    first_epoch = list(share)
    share.set_epoch(1)
    assert list(share) != first_epoch  # reshuffled each epoch, like DistributedSampler.set_epoch
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(torch.utils.data.RandomSampler(dataset), 3, 2, 2)


def test_learning_rate_rule_and_warm_up() -> None:
    assert effective_lr(TrainConfig(lr=0.01), batch_size=32, processes=4) == 0.01
    linear = TrainConfig(lr=0.01, lr_scaling="linear")
    assert effective_lr(linear, 32, 4) == pytest.approx(0.04)
    assert effective_lr(TrainConfig(lr=0.01, lr_scaling="linear", lr_base_batch_size=256), 32, 4) == pytest.approx(
        0.005)
    with pytest.raises(ConfigError, match="train.lr_base_batch_size"):
        effective_lr(TrainConfig(lr_scaling="linear", lr_base_batch_size=0), 32, 2)
    with pytest.raises(ConfigError, match="train.warmup_epochs"):
        effective_lr(TrainConfig(warmup_epochs=-1), 32, 2)

    config = TrainConfig(lr=0.3, warmup_epochs=2, step_size=3, gamma=0.5, epochs=6)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = make_scheduler(optimizer, config)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.15, 0.15])
