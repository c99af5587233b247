"""A run folder is only continued or reused with the settings it was trained with; its files are written atomically."""

import json

import pytest
from conftest import tiny_config

import cxrdistill.files
from cxrdistill.config import NOT_STORED, ExperimentConfig, config_differences, load_config, save_config
from cxrdistill.experiments.run import RunDirectoryError, run_experiment, train_or_resume
from cxrdistill.runtime.checkpoint import load_checkpoint, load_training_state


@pytest.fixture
def one_epoch_run(synth_root, tmp_path):
    """A finished one-epoch tiny run (``tmp_path/runs/tiny``)."""
    return run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), progress=False)


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_naming_each_key(synth_root, tmp_path, one_epoch_run):
    saved_config = (one_epoch_run.run_dir / "config.yaml").read_bytes()
    saved_weights = one_epoch_run.last_checkpoint.read_bytes()
    changed = tiny_config(synth_root, tmp_path, "train.epochs=2", "train.lr=0.02", "data.batch_size=4")
    with pytest.raises(RunDirectoryError) as refusal:
        run_experiment(changed, resume=True, progress=False)
    message = str(refusal.value)
    assert "train.lr: 0.01 -> 0.02" in message and "data.batch_size: 8 -> 4" in message
    assert "train.epochs" not in message  # raising epochs extends a run; it is not a different run
    assert "another name" in message
    assert (one_epoch_run.run_dir / "config.yaml").read_bytes() == saved_config
    assert one_epoch_run.last_checkpoint.read_bytes() == saved_weights


@pytest.mark.slow
def test_sweeps_and_comparisons_do_not_reuse_a_run_made_with_other_settings(synth_root, tmp_path, one_epoch_run):
    with pytest.raises(RunDirectoryError, match="model.dropout: 0.5 -> 0.2"):
        train_or_resume(tiny_config(synth_root, tmp_path, "train.epochs=1", "model.dropout=0.2"), progress=False)


@pytest.mark.slow
def test_same_settings_resume_and_resources_may_change(synth_root, tmp_path, one_epoch_run):
    same = tiny_config(synth_root, tmp_path, "train.epochs=2", "train.threads=1", "train.log_every=3",
                       "train.device=cpu", "train.keep=last", "data.num_workers=0")
    result = run_experiment(same, resume=True, progress=False)
    assert load_training_state(result.last_checkpoint)["epoch"] == 2
    assert load_config(result.run_dir / "config.yaml").train.epochs == 2
    assert train_or_resume(same, progress=False) == result.last_checkpoint  # finished: reused as it is


def test_a_key_newer_than_the_run_matches_when_it_holds_its_default():
    stored = ExperimentConfig().to_dict()
    del stored["train"]["ema_decay"]  # a run saved before train.ema_decay existed
    del stored["data"]["intensity_normalization"]
    assert config_differences(stored, ExperimentConfig()) == {}
    current = load_config(None, ["train.ema_decay=0.99"])
    assert config_differences(stored, current) == {"train.ema_decay": (NOT_STORED, 0.99)}


def test_differences_compare_values_not_spellings():
    """Tuples stored as lists (YAML) and integers written as floats are the same setting."""
    stored = ExperimentConfig().to_dict()
    stored["data"]["scale_range"] = list(stored["data"]["scale_range"])
    stored["train"]["lr"] = 0.0002
    stored["name"], stored["train"]["epochs"] = "moved", 99
    assert config_differences(stored, ExperimentConfig()) == {}
    stored["data"]["scale_range"] = [0.8, 1.2]
    assert config_differences(stored, ExperimentConfig()) == {"data.scale_range": ([0.8, 1.2], [0.9, 1.1])}


def fail_when_replacing(name: str, monkeypatch) -> None:
    """Make the final rename of ``name`` fail, as a crash or full disk after writing part of it would."""
    real_replace = cxrdistill.files.os.replace

    def replace(source, target):
        if str(target).endswith(name):
            raise OSError(f"injected failure writing {name}")
        return real_replace(source, target)

    monkeypatch.setattr(cxrdistill.files.os, "replace", replace)


def test_a_failed_config_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config(ExperimentConfig(name="before"), path)
    fail_when_replacing("config.yaml", monkeypatch)
    with pytest.raises(OSError, match="injected"):
        save_config(ExperimentConfig(name="after"), path)
    assert load_config(path).name == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.slow
def test_a_failed_metrics_rewrite_on_resume_keeps_the_previous_file(synth_root, tmp_path, one_epoch_run, monkeypatch):
    metrics = one_epoch_run.run_dir / "metrics.jsonl"
    with open(metrics, "a") as stream:  # a line for an epoch that never reached last.state.pt (killed mid-epoch)
        stream.write(json.dumps({"epoch": 2, "val_loss": 0.0}) + "\n")
    before = metrics.read_text()
    fail_when_replacing("metrics.jsonl", monkeypatch)
    with pytest.raises(OSError, match="injected"):
        run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), resume=True, progress=False)
    assert metrics.read_text() == before


@pytest.mark.slow
def test_checkpoints_carry_a_digest_of_the_settings(synth_root, tmp_path, one_epoch_run):
    from cxrdistill.config import config_digest

    metadata = load_checkpoint(one_epoch_run.last_checkpoint)["metadata"]
    config = tiny_config(synth_root, tmp_path, "train.epochs=1")
    assert metadata["config_digest"] == config_digest(config)
    extended = tiny_config(synth_root, tmp_path, "train.epochs=5", "train.threads=1")
    assert config_digest(extended) == config_digest(config)
    assert config_digest(tiny_config(synth_root, tmp_path, "train.lr=0.5")) != config_digest(config)


@pytest.mark.slow
def test_a_reused_finished_run_is_scored_again_only_when_its_scoring_settings_change(synth_root, tmp_path,
                                                                                     one_epoch_run):
    evaluation = one_epoch_run.run_dir / "evaluation.json"
    first = evaluation.stat().st_mtime_ns
    same = tiny_config(synth_root, tmp_path, "train.epochs=1")
    train_or_resume(same, progress=False)
    assert evaluation.stat().st_mtime_ns == first  # reused as it is: not evaluated twice
    rescored = tiny_config(synth_root, tmp_path, "train.epochs=1", "evaluation.threshold_policy=fixed",
                           "evaluation.fixed_threshold=0.3")
    train_or_resume(rescored, progress=False)
    assert evaluation.stat().st_mtime_ns != first
    assert json.loads(evaluation.read_text())["operating_point"]["threshold"] == pytest.approx(0.3)


@pytest.mark.slow
def test_a_finished_evaluated_run_is_handed_on_without_being_loaded(synth_root, tmp_path, one_epoch_run, monkeypatch):
    import cxrdistill.experiments.run as run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished, evaluated run was loaded again")

    monkeypatch.setattr(run, "run_experiment", must_not_run)
    same = tiny_config(synth_root, tmp_path, "train.epochs=1")
    assert train_or_resume(same, progress=False) == one_epoch_run.final_checkpoint
    with pytest.raises(AssertionError, match="loaded again"):  # longer: it must train on
        train_or_resume(tiny_config(synth_root, tmp_path, "train.epochs=2"), progress=False)
