"""The CLI turns the user's mistakes into one line and exit status 2, but never hides a bug."""

import pytest
from typer.testing import CliRunner

import cxrdistill.deployment.profile
import cxrdistill.runtime.device
from cxrdistill.cli import app
from cxrdistill.errors import CxrDistillError

runner = CliRunner()


def assert_one_line_user_error(arguments: list[str], expected: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(("arguments", "expected"), [
    (["profile", "no_such_model", "--repeats", "1"], "no_such_model"),
    (["profile", "alexnet", "--size", "16"], "at least"),
    (["profile", "alexnet", "--batch-size", "0"], "batch_size must be at least 1"),
    (["data", "synth", "unused", "--normal-patients", "0"], "at least one patient"),
    (["train", "--synthetic", "model.name=no_such_model", "train.device=cpu"], "unknown model 'no_such_model'"),
    (["train", "train.device=cpu"], "no data to train on: set data.root"),
])
def test_user_errors_are_one_line_and_exit_2(arguments, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `train --synthetic` writes its synthetic set here
    assert_one_line_user_error(arguments, expected)


def test_cuda_asked_for_on_a_machine_without_it(monkeypatch):
    monkeypatch.setattr(cxrdistill.runtime.device.torch.cuda, "is_available", lambda: False)
    assert_one_line_user_error(["profile", "alexnet", "--device", "cuda"], "CUDA is not available")


def test_threshold_outside_zero_to_one_is_refused(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = runner.invoke(app, ["predict", str(tmp_path / "model.pt"), str(image), "--threshold", "1.5"])
    assert result.exit_code == 2 and "less than or equal to 1" in result.output, result.output


@pytest.mark.parametrize("bug", [KeyError("internal_key"), ValueError("bad internal state"),
                                 FileNotFoundError("/internal/file")])
def test_a_programming_error_is_not_swallowed(bug, monkeypatch):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(cxrdistill.deployment.profile, "profile_model", broken)
    result = runner.invoke(app, ["profile", "alexnet"])
    assert result.exit_code != 2
    assert result.exception is bug


def test_project_errors_keep_their_builtin_bases():
    """``except ValueError`` / ``except KeyError`` in user code still catch what they caught before."""
    from cxrdistill.config import ConfigError
    from cxrdistill.data.io import UnreadableImageError
    from cxrdistill.data.layout import DatasetLayoutError
    from cxrdistill.data.splits import SplitFileError
    from cxrdistill.distillation.losses import DistillationSettingError
    from cxrdistill.distillation.teacher import TeacherCacheError
    from cxrdistill.experiments.run import RunDirectoryError, RunNotFoundError
    from cxrdistill.models.weights import WeightsNotAvailableError
    from cxrdistill.registry import UnknownNameError
    from cxrdistill.runtime.checkpoint import CheckpointError

    for error_type, builtin in [
        (ConfigError, ValueError), (DatasetLayoutError, ValueError), (SplitFileError, ValueError),
        (UnreadableImageError, ValueError), (CheckpointError, ValueError), (DistillationSettingError, ValueError),
        (TeacherCacheError, ValueError), (WeightsNotAvailableError, FileNotFoundError),
        (RunDirectoryError, FileExistsError), (RunNotFoundError, FileNotFoundError), (UnknownNameError, KeyError),
    ]:
        assert issubclass(error_type, CxrDistillError) and issubclass(error_type, builtin), error_type


def test_unknown_name_reads_as_a_sentence_not_a_quoted_key():
    from cxrdistill.models import MODELS

    with pytest.raises(KeyError) as caught:
        MODELS.get("no_such_model")
    assert str(caught.value).startswith("unknown model 'no_such_model'; known: ")
