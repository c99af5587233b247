"""Checkpoints are data: safetensors weights, a JSON sidecar with their hash, nothing unpickled on load."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import cxrdistill.files
from cxrdistill.cli import app
from cxrdistill.config import ExperimentConfig
from cxrdistill.files import DiskFullError
from cxrdistill.runtime.checkpoint import (
    CheckpointError,
    checkpoint_files,
    checkpoint_metadata,
    load_checkpoint,
    load_training_state,
    model_from_checkpoint,
    save_checkpoint,
    update_checkpoint_metadata,
)

runner = CliRunner()


def small_checkpoint(path: pathlib.Path, bias: float = 0.0) -> pathlib.Path:
    """A checkpoint of a 3-parameter layer (load_checkpoint does not rebuild the network)."""
    layer = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(layer.weight, 1.0)
    torch.nn.init.constant_(layer.bias, bias)
    return save_checkpoint(path, layer, checkpoint_metadata(ExperimentConfig(), 64, {"val_loss": bias}))


class RunsCode:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do instead."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_pair_on_disk_holds_weights_and_their_hash(tmp_path):
    weights = small_checkpoint(tmp_path / "model.pt")  # any name: written as model.safetensors + model.json
    assert weights == tmp_path / "model.safetensors" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.json", "model.safetensors"]
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar["weights"] == {"file": "model.safetensors",
                                  "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert sidecar["metadata"]["input_size"] == 64 and sidecar["metadata"]["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert torch.equal(load_file(weights)["bias"], torch.zeros(1))  # plain safetensors, readable by any tool
    for name in ("model.safetensors", "model.json", "model.pt"):  # either file, or the old name
        assert load_checkpoint(tmp_path / name)["metadata"]["metrics"] == {"val_loss": 0.0}


def test_tampered_weights_are_refused(tmp_path):
    weights = small_checkpoint(tmp_path / "model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(weights)
    other = small_checkpoint(tmp_path / "other.safetensors", bias=1.0)
    weights.write_bytes(other.read_bytes())  # another checkpoint's weights under this sidecar
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        model_from_checkpoint(weights)


def test_metadata_update_keeps_the_weights(tmp_path):
    weights = small_checkpoint(tmp_path / "model.safetensors")
    before = weights.read_bytes()
    update_checkpoint_metadata(weights, {"operating_point": {"threshold": 0.3}})
    assert weights.read_bytes() == before
    assert load_checkpoint(weights)["metadata"]["operating_point"] == {"threshold": 0.3}
    copy = update_checkpoint_metadata(weights, {"calibration": {"temperature": 2.0}}, tmp_path / "calibrated.pt")
    assert copy == tmp_path / "calibrated.safetensors" and copy.read_bytes() == before
    assert "calibration" not in load_checkpoint(weights)["metadata"]


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "metadata": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil.pt is not a cxrdistill checkpoint: .*evil.safetensors"):
        model_from_checkpoint(evil)  # a pickled file is never opened, let alone unpickled
    # The same payload disguised as a checkpoint: weights file and resume state.
    files = checkpoint_files(small_checkpoint(tmp_path / "evil.safetensors"))
    payload = io.BytesIO()
    torch.save(RunsCode(marker), payload)
    files.weights.write_bytes(payload.getvalue())
    sidecar = json.loads(files.sidecar.read_text())
    sidecar["weights"]["sha256"] = hashlib.sha256(payload.getvalue()).hexdigest()
    files.sidecar.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(files.weights)
    files.state.write_bytes(payload.getvalue())
    with pytest.raises(CheckpointError, match="holds code"):
        load_training_state(files.weights)
    assert not marker.exists()


class FailingDisk:
    """Makes the ``fail_at``-th write or rename fail, the write after half its bytes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int, error: OSError) -> None:
        self.count, self.fail_at, self.error = 0, fail_at, error
        real_fdopen, real_replace = cxrdistill.files.os.fdopen, cxrdistill.files.os.replace
        disk = self

        class HalfWriter(io.FileIO):
            def write(self, data) -> int:
                disk.count += 1
                if disk.count == disk.fail_at:
                    super().write(bytes(data)[: len(data) // 2])
                    raise disk.error
                return super().write(data)

        def fdopen(handle, mode="r", *args, **kwargs):
            return HalfWriter(handle, "w") if "w" in mode else real_fdopen(handle, mode, *args, **kwargs)

        def replace(source, target):
            disk.count += 1
            if disk.count == disk.fail_at:
                raise disk.error
            return real_replace(source, target)

        monkeypatch.setattr(cxrdistill.files.os, "fdopen", fdopen)  # the os module, used by checkpoint.py too
        monkeypatch.setattr(cxrdistill.files.os, "replace", replace)


def test_a_save_failing_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    """A crash mid-write (a write cut short, a rename that never happens) never leaves a broken pair."""
    path = tmp_path / "last.safetensors"
    seen = set()
    for fail_at in range(1, 6):  # sidecar.pending write + rename, weights write + rename, pending -> sidecar
        small_checkpoint(path, bias=0.0)
        with monkeypatch.context() as patch:
            FailingDisk(patch, fail_at, OSError("injected failure"))
            with pytest.raises(OSError, match="injected"):
                small_checkpoint(path, bias=1.0)
        loaded = load_checkpoint(path)
        seen.add(float(loaded["model_state"]["bias"]))
        assert loaded["metadata"]["metrics"]["val_loss"] == float(loaded["model_state"]["bias"])  # a matching pair
        assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    assert seen == {0.0, 1.0}  # early failures keep the old checkpoint, the last one already reads as the new


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = small_checkpoint(tmp_path / "model.safetensors")
    before = path.read_bytes()
    FailingDisk(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))  # the weights file
    with pytest.raises(DiskFullError, match="no space left"):
        small_checkpoint(path, bias=1.0)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["metadata"]["metrics"] == {"val_loss": 0.0}


def test_a_full_disk_during_a_command_prints_one_line(tmp_path, monkeypatch):
    FailingDisk(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "synth")])
    assert result.exit_code == 2, result.output
    assert "no space left on the device" in result.output and "Traceback" not in result.output
