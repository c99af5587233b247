"""One inference preprocessing: the same file gives the same tensor on every path that feeds a model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdistill.config import DataConfig, load_config
from cxrdistill.data.dataset import build_dataset
from cxrdistill.data.io import decode_grey, read_grey
from cxrdistill.data.layout import ImageRecord
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.deployment.predict import Predictor
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint

SIZE = 32


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-square grey PNG with a skewed histogram, so resizing and equalisation both change it."""
    rng = np.random.default_rng(0)
    pixels = (np.linspace(0, 1, 70)[None, :] ** 3 * 180 + rng.integers(0, 60, (50, 70))).astype(np.uint8)
    path = tmp_path_factory.mktemp("film") / "person1_virus_1.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def equalising_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(None, ["model.name=resnet18", "data.intensity_normalization=equalize"])
    model = create_model(config.model, image_size=SIZE)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", model, checkpoint_metadata(config, SIZE))


def test_every_path_gives_the_same_tensor(film: Path, equalising_checkpoint: Path, tmp_path: Path) -> None:
    reference = Preprocessing(SIZE, "equalize")(film)
    assert reference.shape == (3, SIZE, SIZE) and reference.dtype == torch.float32
    # Without the model's equalisation the tensor differs: the comparisons below can fail.
    assert not torch.equal(reference, Preprocessing(SIZE)(film))

    predictor = Predictor(equalising_checkpoint)  # predict and serve
    assert predictor.preprocessing == Preprocessing(SIZE, "equalize")
    served = decode_grey(io.BytesIO(film.read_bytes()), "upload")
    paths = {"predict": predictor.model_input(read_grey(film)), "serve": predictor.model_input(served)}
    record = ImageRecord(film, 1, "person1", "")
    for cached in (True, False):  # evaluation and the teacher-logit cache read through the dataset
        data = DataConfig(cache_dir=str(tmp_path / f"cache-{cached}"), use_cache=cached,
                          intensity_normalization="equalize")
        paths[f"dataset, cache {cached}"] = build_dataset([record], data, SIZE, augment=False, progress=False)[0][
            "image"]
    for name, tensor in paths.items():
        assert torch.equal(tensor, reference), name


def test_the_onnx_export_and_int8_calibration_follow_it(film: Path, equalising_checkpoint: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from cxrdistill.deployment.export import export_onnx
    from cxrdistill.deployment.quantize import ImageCalibrationReader

    exported = export_onnx(equalising_checkpoint, equalising_checkpoint.with_suffix(".onnx")).path
    metadata = {p.key: json.loads(p.value) for p in onnx.load(exported).metadata_props}
    assert metadata["preprocessing"] == Preprocessing(SIZE, "equalize").record()
    reference = Preprocessing(SIZE, "equalize")(film)
    assert torch.equal(Predictor(exported).model_input(read_grey(film)), reference)
    batch = ImageCalibrationReader([film], Preprocessing.of(metadata)).get_next()["image"]
    assert np.array_equal(batch[0], reference.numpy())


def test_a_bad_intensity_normalisation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown intensity normalisation 'gamma'"):
        Preprocessing(SIZE, "gamma")
