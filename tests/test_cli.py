"""The command line: each command end to end on tiny data, and one-line errors for bad input."""

import json

import pytest
import yaml
from conftest import load_benchmark
from typer.testing import CliRunner

from cxrdistill.cli import app

runner = CliRunner()


def tiny_overrides(synth_root, tmp_path):
    return [f"data.root={synth_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32",
            "data.batch_size=8", "data.num_workers=0", "model.name=resnet18", "train.epochs=1",
            "train.early_stopping_patience=null", "evaluation.n_bootstrap=20", f"output_dir={tmp_path / 'runs'}"]


@pytest.mark.slow
def test_train_evaluate_and_errors(synth_root, tmp_path):
    result = runner.invoke(app, ["train", "--quiet", *tiny_overrides(synth_root, tmp_path), "name=cli"])
    assert result.exit_code == 0, result.output
    best = tmp_path / "runs" / "cli" / "best.safetensors"
    assert f"best checkpoint: {best}" in result.output.replace("\n", "")
    result = runner.invoke(app, ["evaluate", str(best), "--data", str(synth_root), "--bootstrap", "20", "--json"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.output)["metrics"]["accuracy"]["value"] <= 1.0

    again = runner.invoke(app, ["train", "--quiet", *tiny_overrides(synth_root, tmp_path), "name=cli"])
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output


def test_bad_config_key_and_missing_checkpoint(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"train": {"learning_rate": 0.1}}))
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2 and "learning_rate" in result.output and "bad.yaml" in result.output
    result = runner.invoke(app, ["train", "-c", "cpu/nothing"])
    assert result.exit_code == 2 and "neither a file nor a preset" in result.output and "cpu/teacher" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none.pt"), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_demo_passes_overrides_to_its_presets(tmp_path):
    """A misspelt override stops the demo before any training, naming the key (so a right one gets through)."""
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--quiet", "train.thread=1"])
    assert result.exit_code == 2 and "unknown key train.'thread'" in result.output
    assert not (tmp_path / "teacher").exists()


def test_models_table_json():
    result = runner.invoke(app, ["models", "--json", "--size", "64"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {"alexnet", "vgg16", "resnet18", "resnet34", "inception_v3", "mobilenet_v3_small",
                         "efficientnet_lite0"}
    assert rows["mobilenet_v3_small"]["paper_params_m"] is None  # not in the paper's Table I
    assert rows["alexnet"]["paper_params_m"] == 64.90 and rows["alexnet"]["weight_layers"] == 8
    assert rows["alexnet"]["input_size"] == 64 and rows["inception_v3"]["input_size"] == 75  # its minimum


@pytest.mark.slow
def test_sweep_and_compare(synth_root, tmp_path):
    common = tiny_overrides(synth_root, tmp_path)
    assert runner.invoke(app, ["train", "--quiet", *common, "name=teacher", "data.image_size=40"]).exit_code == 0
    teacher = tmp_path / "runs" / "teacher" / "best.safetensors"
    result = runner.invoke(app, ["sweep-temperature", "--quiet", "--teacher", str(teacher), "--temperatures", "1,4",
                                 "--out", str(tmp_path / "sweep"), *common])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| 1.0" in table and "| 4.0" in table and (tmp_path / "sweep" / "sweep.png").is_file()

    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"name": "x"}))
    distilled = tmp_path / "kd.yaml"
    distilled.write_text(yaml.safe_dump({"name": "y", "distill": {"teacher": "given"}}))
    result = runner.invoke(app, ["compare", "--quiet", "--arm", f"student={plain}", "--arm", f"student_kd={distilled}",
                                 "--teacher", str(teacher), "--seeds", "2", "--out", str(tmp_path / "cmp"), *common])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {(r["arm"], r["seed"]) for r in saved["runs"]} == {(a, s) for a in ("student", "student_kd") for s in (0, 1)}
    assert saved["difference"][0]["pairs"] == 2 and (tmp_path / "cmp" / "compare.png").is_file()
    kd_config = yaml.safe_load((tmp_path / "cmp" / "seed0" / "student_kd" / "config.yaml").read_text())
    assert kd_config["distill"]["teacher"] == str(teacher)

    # benchmarks/seed_study.py tabulates runs trained one by one ({ARM}-s{SEED} folders) with the same numbers.
    study = tmp_path / "study"
    study.mkdir()
    for arm in ("student", "student_kd"):
        for seed in (0, 1):
            (study / f"{arm}-s{seed}").symlink_to(tmp_path / "cmp" / f"seed{seed}" / arm)
    seed_study = load_benchmark("seed_study")
    tabulated = seed_study.main(["--runs", str(study), "--arm", "student=student", "--arm", "student_kd=student_kd",
                                 "--difference", "student_kd:student", "--out", str(tmp_path / "tab")])
    tabulated, compared = (json.loads(json.dumps(tabulated.as_dict(), default=float)),
                           json.loads((tmp_path / "cmp" / "compare.json").read_text()))
    assert tabulated["summary"] == compared["summary"] and tabulated["difference"] == compared["difference"]
    assert sorted(map(json.dumps, tabulated["runs"])) == sorted(map(json.dumps, compared["runs"]))
    assert (tmp_path / "tab" / "seeds-difference.md").is_file()
