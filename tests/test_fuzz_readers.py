"""Property-based tests of every reader of outside files: image, DICOM, config and checkpoint.

Each is fed random bytes and mutations of a valid file (bytes overwritten, inserted, cut short). Whatever
the input, the reader returns a result or raises one of the project's own errors (a
:class:`CxrDistillError`, which the command line prints as one line) — never anything else. Examples are
drawn reproducibly (``derandomize``) and few, so the whole file runs in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrdistill.config import ExperimentConfig, load_config, save_config
from cxrdistill.data.io import UnreadableImageError, read_grey
from cxrdistill.errors import CxrDistillError
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import (
    checkpoint_files,
    checkpoint_metadata,
    model_from_checkpoint,
    save_checkpoint,
)

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_SLOW = settings(FUZZ, max_examples=40)
"""For the checkpoint loader, which may build a network per example."""


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes overwritten, a run of random bytes inserted, and possibly cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def inputs(*originals: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), *(mutated(original) for original in originals))


def raises_only_our_errors(call) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "image is constant", PIL's truncated-file warnings
        with contextlib.suppress(CxrDistillError):
            call()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def encoded(image: Image.Image, file_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format)
    return buffer.getvalue()


GRADIENT = np.add.outer(np.arange(24), np.arange(20)).astype(np.uint8) * 5
IMAGES = {
    "png": encoded(Image.fromarray(GRADIENT), "PNG"),
    "png16": encoded(Image.fromarray(GRADIENT.astype(np.uint16) * 200), "PNG"),
    "jpeg": encoded(Image.fromarray(GRADIENT), "JPEG"),
}


@FUZZ
@given(data=inputs(*IMAGES.values()), suffix=st.sampled_from([".png", ".jpeg"]))
def test_image_reader_raises_only_unreadable_image_errors(workdir, data, suffix):
    path = workdir / f"image{suffix}"
    path.write_bytes(data)
    raises_only_our_errors(lambda: read_grey(path))


@pytest.mark.parametrize("side", [9000, 100_000])  # over the project's limit; over PIL's own bomb limit
def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(workdir, side):
    png = bytearray(IMAGES["png"])
    png[16:24] = struct.pack(">II", side, side)  # the IHDR chunk's width and height, then its checksum
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))
    path = workdir / "bomb.png"
    path.write_bytes(bytes(png))
    with pytest.raises(UnreadableImageError, match="too large"):
        read_grey(path)


@pytest.fixture(scope="module")
def dicom_bytes(workdir) -> bytes:
    pytest.importorskip("pydicom")
    from image_files import write_dicom

    # A rescale (DS text numbers, which mutations can break) and a window, so every LUT step is fuzzed.
    path = write_dicom(workdir / "valid.dcm", GRADIENT.astype(np.uint16) * 16, "MONOCHROME1",
                       window=(2000.0, 3000.0), rescale=(1.5, -10.0))
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_dicom_reader_raises_only_unreadable_image_errors(workdir, dicom_bytes, data):
    path = workdir / "image.dcm"
    path.write_bytes(data.draw(inputs(dicom_bytes)))
    raises_only_our_errors(lambda: read_grey(path))


@pytest.fixture(scope="module")
def config_bytes(workdir) -> bytes:
    path = workdir / "valid.yaml"
    save_config(ExperimentConfig(), path)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_config_loader_raises_only_config_errors(workdir, config_bytes, data):
    path = workdir / "config.yaml"
    path.write_bytes(data.draw(inputs(config_bytes, b"train:\n  lr: 1e-3\n  epochs: 3\ndata: {batch_size: 4}\n")))
    raises_only_our_errors(lambda: load_config(path))


@pytest.fixture(scope="module")
def checkpoint(workdir) -> tuple[bytes, bytes, bytes]:
    """A valid checkpoint of a small network (its sidecar), and the weights of a 3-tensor one (fuzzed whole)."""
    config = ExperimentConfig()
    config.model.name = "resnet18"
    network = save_checkpoint(workdir / "valid.safetensors", create_model(config.model, image_size=32),
                              checkpoint_metadata(config, 32))
    small = save_checkpoint(workdir / "small.safetensors", torch.nn.Sequential(torch.nn.Linear(3, 2),
                                                                               torch.nn.BatchNorm1d(2)),
                            checkpoint_metadata(config, 32))
    return network.read_bytes(), checkpoint_files(network).sidecar.read_bytes(), small.read_bytes()


@FUZZ_SLOW
@given(data=st.data())
def test_checkpoint_loader_raises_only_checkpoint_errors(workdir, checkpoint, data):
    weights, sidecar, small_weights = checkpoint
    files = checkpoint_files(workdir / "fuzzed.safetensors")
    if data.draw(st.booleans(), label="mutate the sidecar"):
        files.weights.write_bytes(weights)
        files.sidecar.write_bytes(data.draw(inputs(sidecar)))
    else:  # mutated weights under a sidecar that records their hash: the safetensors parser itself is fuzzed
        fuzzed = data.draw(inputs(small_weights))
        files.weights.write_bytes(fuzzed)
        record = json.loads(sidecar)
        record["weights"]["sha256"] = hashlib.sha256(fuzzed).hexdigest()
        files.sidecar.write_text(json.dumps(record))
    raises_only_our_errors(lambda: model_from_checkpoint(files.weights))
