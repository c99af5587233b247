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


SETTINGS = {"equalising": ("equalize", 0.0), "border-cropping": ("none", 0.1)}
"""Model-bound preprocessing: the intensity normalisation and the border crop."""


@pytest.fixture(scope="module", params=list(SETTINGS))
def model_settings(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Preprocessing]:
    """A checkpoint trained with one of ``SETTINGS``, and the preprocessing it must be fed with."""
    intensity, crop = SETTINGS[request.param]
    config = load_config(None, ["model.name=resnet18", f"data.intensity_normalization={intensity}",
                                f"data.border_crop={crop}"])
    model = create_model(config.model, image_size=SIZE)
    checkpoint = save_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", model,
                                 checkpoint_metadata(config, SIZE))
    return checkpoint, Preprocessing(SIZE, intensity, crop)


def test_every_path_gives_the_same_tensor(film: Path, model_settings, tmp_path: Path) -> None:
    checkpoint, preprocessing = model_settings
    reference = preprocessing(film)
    assert reference.shape == (3, SIZE, SIZE) and reference.dtype == torch.float32
    # Without the model's own setting the tensor differs: the comparisons below can fail.
    assert not torch.equal(reference, Preprocessing(SIZE)(film))

    predictor = Predictor(checkpoint)  # predict and serve
    assert predictor.preprocessing == preprocessing
    served = decode_grey(io.BytesIO(film.read_bytes()), "upload")
    paths = {"predict": predictor.model_input(read_grey(film)), "serve": predictor.model_input(served)}
    record = ImageRecord(film, 1, "person1", "")
    for cached in (True, False):  # evaluation and the teacher-logit cache read through the dataset
        data = DataConfig(cache_dir=str(tmp_path / f"cache-{cached}"), use_cache=cached,
                          intensity_normalization=preprocessing.intensity, border_crop=preprocessing.border_crop)
        paths[f"dataset, cache {cached}"] = build_dataset([record], data, SIZE, augment=False, progress=False)[0][
            "image"]
    for name, tensor in paths.items():
        assert torch.equal(tensor, reference), name


def test_the_onnx_export_and_int8_calibration_follow_it(film: Path, model_settings) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from cxrdistill.deployment.export import export_onnx
    from cxrdistill.deployment.quantize import ImageCalibrationReader

    checkpoint, preprocessing = model_settings
    exported = export_onnx(checkpoint, checkpoint.with_suffix(".onnx")).path
    metadata = {p.key: json.loads(p.value) for p in onnx.load(exported).metadata_props}
    assert metadata["preprocessing"] == preprocessing.record()
    assert Preprocessing.of(metadata) == preprocessing
    reference = preprocessing(film)
    assert torch.equal(Predictor(exported).model_input(read_grey(film)), reference)
    batch = ImageCalibrationReader([film], Preprocessing.of(metadata)).get_next()["image"]
    assert np.array_equal(batch[0], reference.numpy())


def test_the_border_crop_ignores_the_edge_strips_and_keeps_the_rest(film: Path) -> None:
    grey = read_grey(film)  # 50 x 70: a 0.1 crop cuts 5 rows off the top and bottom, 7 columns off each side
    marked = grey.copy()
    marked[:5], marked[-5:], marked[:, :7], marked[:, -7:] = 255, 0, 255, 0  # a marker and padding at the edges
    cropping = Preprocessing(SIZE, border_crop=0.1)
    assert torch.equal(cropping.from_grey(marked), cropping.from_grey(grey))
    assert not torch.equal(Preprocessing(SIZE).from_grey(marked), Preprocessing(SIZE).from_grey(grey))
    inside = grey.copy()
    inside[5, 7] = 255 - inside[5, 7]  # the first pixel kept is read
    assert not torch.equal(cropping.from_grey(inside), cropping.from_grey(grey))


def test_cropped_and_uncropped_images_share_a_cache_folder_without_mixing(film: Path, tmp_path: Path) -> None:
    record = ImageRecord(film, 1, "person1", "")
    for crop in (0.0, 0.1, 0.0, 0.1):  # each is decoded into its own file and read back from it
        data = DataConfig(cache_dir=str(tmp_path), border_crop=crop)
        sample = build_dataset([record], data, SIZE, augment=False, progress=False)[0]["image"]
        assert torch.equal(sample, Preprocessing(SIZE, border_crop=crop)(film)), crop


@pytest.mark.parametrize("crop", [-0.1, 0.25, 0.5])
def test_a_border_crop_out_of_range_is_refused(crop: float) -> None:
    with pytest.raises(ValueError, match=r"border crop .* must be in \[0, 0.25\)"):
        Preprocessing(SIZE, border_crop=crop)


def test_a_bad_intensity_normalisation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown intensity normalisation 'gamma'"):
        Preprocessing(SIZE, "gamma")
