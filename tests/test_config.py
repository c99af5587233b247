"""Config loading: plain YAML, unknown keys and bad values named, overrides by dotted key."""

import re
from pathlib import Path

import pytest

from cxrdistill.config import ConfigError, ExperimentConfig, OverrideError, load_config, preset, save_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_defaults_and_values_from_file(tmp_path):
    config = load_config(write(tmp_path, "name: x\ntrain:\n  epochs: 3\n  lr: 1e-3\nmodel:\n  name: resnet18\n"))
    assert (config.name, config.train.epochs, config.train.lr, config.model.name) == ("x", 3, 1e-3, "resnet18")
    assert config.train.gamma == 0.9 and config.train.step_size == 7  # the paper's schedule by default


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"experiment.yaml.*train\.'epohcs'|experiment.yaml.*epohcs"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epochs: three\n", "train.epochs"),
        ("train:\n  amp: sometimes\n", "train.amp"),
        ("model:\n  transfer: melt\n", "model.transfer"),
        ("data:\n  scale_range: [0.9]\n", "data.scale_range"),
        ("train: 5\n", "train"),
        ("train:\n  lr: true\n", "train.lr"),
    ],
)
def test_bad_values_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_overrides_parse_yaml_values():
    config = load_config(None, ["train.epochs=4", "data.root=/data", "train.early_stopping_patience=null",
                                "data.scale_range=[0.8, 1.2]"])
    assert config.train.epochs == 4 and config.data.root == "/data"
    assert config.train.early_stopping_patience is None and config.data.scale_range == (0.8, 1.2)
    assert load_config(None, ["train.amp=off"]).train.amp == "off"  # YAML's bare off is false
    assert load_config(None, ["train.amp=on", "train.threads=1"]).train.amp == "on"
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.epochs"])


def test_errors_name_the_override_or_the_file_they_come_from(tmp_path):
    """A misspelt command-line override is not the file's fault, and a bad file is not the override's."""
    good = write(tmp_path, "train:\n  epochs: 3\n")
    with pytest.raises(OverrideError, match=r"^override 'train\.epochz=4': unknown key train\.'epochz'") as error:
        load_config(good, ["train.epochs=5", "train.epochz=4"])
    assert str(good) not in str(error.value)
    with pytest.raises(OverrideError, match="override 'train.epochs=many': train.epochs: expected an integer"):
        load_config(good, ["train.epochs=many"])
    bad = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: unknown key train.'epochz'") as error:
        load_config(bad, ["train.epochs=5"])
    assert not isinstance(error.value, OverrideError)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml. is neither a file nor a preset"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))


def test_yaml_tags_are_refused(tmp_path):
    """Configs are plain data: a python/object tag must not construct anything."""
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def test_save_and_reload_round_trip(tmp_path):
    config = load_config(None, ["train.epochs=5", "model.frontend=srm", "data.scale_range=[0.8, 1.3]"])
    save_config(config, tmp_path / "saved.yaml")
    assert "!!" not in (tmp_path / "saved.yaml").read_text()
    assert load_config(tmp_path / "saved.yaml") == config


def test_presets_load():
    for name in ("cpu/teacher", "cpu/student", "cpu/student_kd", "paper/teacher", "paper/student",
                 "paper/student_kd"):
        assert isinstance(preset(name), ExperimentConfig)
    assert preset("paper/teacher").train.lr == 5e-3 and preset("paper/student").train.lr == 2e-4
    with pytest.raises(ConfigError, match="known: .*cpu/student"):
        preset("cpu/nothing")


def test_every_packaged_preset_loads_by_name():
    """A YAML file dropped anywhere under the package's configs/ is a preset, listed and loadable by name."""
    from cxrdistill.config import preset_names
    from cxrdistill.config.presets import PLAN_FOLDER, preset_root
    from cxrdistill.paper.reproduce import load_plan

    folder = Path(str(preset_root()))
    on_disk = {str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")}
    names, plans = preset_names(), preset_names(PLAN_FOLDER)
    assert set(names) | {f"{PLAN_FOLDER}/{p}" for p in plans} == on_disk and "demo/student" in names
    for name in names:
        assert isinstance(load_config(name), ExperimentConfig)
    assert [load_plan(plan).name for plan in plans] == plans


def test_an_existing_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "teacher.yaml").write_text("name: mine\n")
    assert load_config("cpu/teacher.yaml").name == "mine"  # the file
    assert load_config("cpu/teacher").name == preset("cpu/teacher").name != "mine"  # no such file: the preset
    (tmp_path / "cpu" / "teacher").write_text("name: also-mine\n")
    assert load_config("cpu/teacher").name == "also-mine"


def test_an_unknown_config_names_the_presets_and_the_one_an_old_path_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'configs/cpu/teacher.yaml' is neither a file nor a preset "
                                          r"\(did you mean the preset 'cpu/teacher'\?\); presets: .*cpu/student"):
        load_config("configs/cpu/teacher.yaml")
    with pytest.raises(ConfigError, match="'mine.yaml' is neither a file nor a preset; presets: "):
        load_config("mine.yaml")
