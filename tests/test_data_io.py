"""Reading X-ray files of any format (cxrdistill.data.io) and the model input normalisation (transforms)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdistill.data.io import UnreadableImageError, is_image_file, load_for_model, read_grey, resize_grey
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentSettings, XRayTransform, to_model_input

EXIF_ORIENTATION = 0x0112


def _gradient(height: int, width: int) -> np.ndarray:
    """A smooth 8-bit image with a different value range along each axis (so transposes are visible)."""
    rows = np.linspace(20, 120, height)[:, None]
    cols = np.linspace(0, 110, width)[None, :]
    return np.round(rows + cols).astype(np.uint8)


# --------------------------------------------------------------------------- read_grey: formats


def test_large_grey_jpeg_reads_as_2d_uint8_of_the_right_shape(tmp_path: Path) -> None:
    pixels = _gradient(1200, 1500)  # height 1200, width 1500
    path = tmp_path / "big.jpeg"
    Image.fromarray(pixels).save(path, quality=95)

    grey = read_grey(path)

    assert grey.dtype == np.uint8
    assert grey.shape == (1200, 1500)
    # JPEG is lossy, but a smooth gradient survives within a few grey levels.
    assert np.abs(grey.astype(int) - pixels).max() <= 4
    assert grey.flags.writeable  # a private array, not a view into a closed PIL image


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_8bit_formats_read_exactly(tmp_path: Path, suffix: str) -> None:
    pixels = _gradient(40, 56)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(read_grey(path), pixels)


def test_grey_with_alpha_png_keeps_the_grey_values(tmp_path: Path) -> None:
    pixels = _gradient(30, 20)
    alpha = np.full_like(pixels, 255)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([pixels, alpha], axis=-1), mode="LA").save(path)
    np.testing.assert_array_equal(read_grey(path), pixels)


def test_rgb_copy_of_a_grey_xray_reads_back_the_grey_values(tmp_path: Path) -> None:
    pixels = _gradient(48, 64)
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(path)
    grey = read_grey(path)
    assert grey.shape == (48, 64) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, pixels)


def test_colour_jpeg_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :32] = (255, 0, 0)
    rgb[:, 32:64] = (0, 255, 0)
    rgb[:, 64:] = (0, 0, 255)
    path = tmp_path / "colour.jpeg"
    Image.fromarray(rgb).save(path, quality=95)

    grey = read_grey(path)

    assert grey.shape == (64, 96) and grey.ndim == 2
    # ITU-R 601 luma: 0.299 R + 0.587 G + 0.114 B, read in the middle of each block (away from JPEG edges).
    for column, expected in ((16, 0.299 * 255), (48, 0.587 * 255), (80, 0.114 * 255)):
        assert abs(float(grey[32, column]) - expected) <= 4, (column, grey[32, column], expected)


def test_16bit_png_is_windowed_to_the_full_8bit_range_in_order(tmp_path: Path) -> None:
    values = np.linspace(1000, 4000, 40 * 50).reshape(40, 50).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file, not an 8-bit one

    grey = read_grey(path)

    assert grey.dtype == np.uint8 and grey.shape == (40, 50)
    assert grey.min() == 0 and grey.max() == 255
    flat = grey.ravel()
    assert np.all(np.diff(flat.astype(int)) >= 0)  # order preserved
    assert len(np.unique(flat)) > 200  # the range is used, not a few bands
    assert abs(int(flat[len(flat) // 2]) - 128) <= 2  # the middle value lands in the middle


def test_16bit_png_with_narrow_range_is_stretched(tmp_path: Path) -> None:
    values = np.array([[3000, 3001], [3002, 3003]], dtype=np.uint16)
    path = tmp_path / "narrow.png"
    Image.fromarray(values).save(path)
    np.testing.assert_array_equal(read_grey(path), [[0, 85], [170, 255]])


def test_float_tiff_is_windowed(tmp_path: Path) -> None:
    values = np.linspace(-0.5, 0.25, 30 * 20, dtype=np.float32).reshape(30, 20)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    grey = read_grey(path)
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.ravel().astype(int)) >= 0)


def test_constant_16bit_image_warns_and_reads_as_zeros(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((20, 30), 2048, dtype=np.uint16)).save(path)
    with pytest.warns(UserWarning, match="constant") as caught:
        grey = read_grey(path)
    assert str(path) in str(caught[0].message)
    assert grey.shape == (20, 30) and grey.dtype == np.uint8
    assert not grey.any()


def test_constant_8bit_image_is_read_as_is_without_warning(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((10, 12), 77, dtype=np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = read_grey(path)
    assert (grey == 77).all()


@pytest.mark.parametrize("orientation, rotate", [(6, -1), (8, 1), (3, 2)])
def test_exif_rotated_jpeg_is_transposed(tmp_path: Path, orientation: int, rotate: int) -> None:
    stored = np.full((40, 60), 30, dtype=np.uint8)  # 40 rows x 60 columns as stored
    stored[:16, :16] = 250  # a bright block in the stored top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "rotated.jpeg"
    image.save(path, quality=95, exif=exif.tobytes())

    grey = read_grey(path)

    # Orientation 6: turn 90 degrees clockwise to view; 8: counter-clockwise; 3: upside down.
    expected = np.rot90(stored, rotate)
    assert grey.shape == expected.shape
    assert np.abs(grey.astype(int) - expected.astype(int)).mean() < 3


# --------------------------------------------------------------------------- read_grey: errors


def test_truncated_jpeg_is_unreadable_and_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpeg"
    Image.fromarray(_gradient(200, 160)).save(good, quality=90)
    data = good.read_bytes()
    cut = tmp_path / "person3_virus_1.jpeg"
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(UnreadableImageError) as info:
        read_grey(cut)

    assert str(cut) in str(info.value)
    assert info.value.path == cut
    assert "truncated" in info.value.reason


def test_text_file_named_jpeg_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "IM-0001-0001.jpeg"
    path.write_text("this is not an image\n")
    with pytest.raises(UnreadableImageError, match="not an image file") as info:
        read_grey(path)
    assert str(path) in str(info.value)


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(UnreadableImageError):
        read_grey(path)


def test_unreadable_image_error_is_a_value_error() -> None:
    error = UnreadableImageError(Path("x.jpeg"), "broken")
    assert isinstance(error, ValueError)
    assert str(error) == "x.jpeg: broken"


@pytest.mark.parametrize(
    "name, expected",
    [("a.jpeg", True), ("a.JPG", True), ("a.png", True), ("a.tiff", True), ("a.dcm", True), ("a.DCM", True),
     ("a.txt", False), ("a", False), (".a.jpeg", False), ("a.jpeg.bak", False)],
)
def test_is_image_file(name: str, expected: bool) -> None:
    assert is_image_file(Path("folder") / name) is expected


# --------------------------------------------------------------------------- DICOM


def test_dicom_without_pydicom_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` raise ImportError
    path = tmp_path / "chest.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(UnreadableImageError) as info:
        read_grey(path)
    assert str(path) in str(info.value)
    assert "pip install" in str(info.value) and "dicom" in str(info.value)


# --------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("shape", [(1200, 1500), (64, 72), (30, 30), (128, 128)])
def test_resize_grey_gives_a_square_uint8(shape: tuple[int, int]) -> None:
    pixels = _gradient(*shape)
    small = resize_grey(pixels, 64)
    assert small.shape == (64, 64) and small.dtype == np.uint8
    # A smooth gradient keeps its range and its direction after resizing.
    assert abs(int(small.min()) - int(pixels.min())) <= 6 and abs(int(small.max()) - int(pixels.max())) <= 6
    assert small[0, 0] < small[-1, -1] and small[0, -1] > small[0, 0] and small[-1, 0] > small[0, 0]


def test_resize_grey_of_the_target_size_is_unchanged() -> None:
    pixels = _gradient(64, 64)
    np.testing.assert_array_equal(resize_grey(pixels, 64), pixels)


def test_resize_grey_antialiases_fine_stripes() -> None:
    stripes = np.zeros((256, 256), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: plain point sampling would keep only black or only white
    small = resize_grey(stripes, 32)
    assert abs(float(small.mean()) - 127.5) < 10
    assert small.std() < 20


def test_load_for_model_reads_and_resizes(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_gradient(90, 70)).save(path)
    np.testing.assert_array_equal(load_for_model(path, 48), resize_grey(read_grey(path), 48))
    assert load_for_model(path, 48).shape == (48, 48)


# --------------------------------------------------------------------------- model input


def test_to_model_input_shape_channels_and_imagenet_values() -> None:
    grey = torch.zeros((1, 5, 7), dtype=torch.uint8)
    grey[0, 0, 0] = 255
    grey[0, 2, 3] = 51  # 0.2 after scaling to [0, 1]

    image = to_model_input(grey)

    assert image.shape == (3, 5, 7) and image.dtype == torch.float32
    for channel, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)):
        assert image[channel, 1, 1].item() == pytest.approx((0.0 - mean) / std, abs=1e-5)
        assert image[channel, 0, 0].item() == pytest.approx((1.0 - mean) / std, abs=1e-5)
        assert image[channel, 2, 3].item() == pytest.approx((0.2 - mean) / std, abs=1e-5)
    # The three channels carry the same grey picture: undoing each channel's normalisation gives equal planes.
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    unnormalised = image * std + mean
    torch.testing.assert_close(unnormalised[0], unnormalised[1])
    torch.testing.assert_close(unnormalised[0], unnormalised[2])
    torch.testing.assert_close(unnormalised[0], grey[0].float() / 255)


def test_to_model_input_keeps_batch_dimensions() -> None:
    grey = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    image = to_model_input(grey)
    assert image.shape == (4, 3, 6, 6)
    torch.testing.assert_close(image[2], to_model_input(grey[2]))


def test_to_model_input_does_not_change_its_input() -> None:
    grey = torch.full((1, 3, 3), 200, dtype=torch.uint8)
    to_model_input(grey)
    assert (grey == 200).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.int64])
def test_to_model_input_rejects_non_uint8(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match="uint8"):
        to_model_input(torch.zeros((1, 4, 4), dtype=dtype))


def test_xray_transform_without_augmentation_is_to_model_input() -> None:
    pixels = _gradient(32, 32)
    tensor = XRayTransform(None)(pixels)
    torch.testing.assert_close(tensor, to_model_input(torch.from_numpy(pixels).unsqueeze(0)))


def test_xray_transform_accepts_read_only_cache_rows() -> None:
    pixels = _gradient(32, 32)
    pixels.setflags(write=False)  # memory-mapped cache rows are read-only
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a non-writable array
        tensor = XRayTransform(AugmentSettings())(pixels)
    assert tensor.shape == (3, 32, 32)
    assert not pixels.flags.writeable


def test_augmentation_is_mild_and_random() -> None:
    pixels = _gradient(64, 64)
    transform = XRayTransform(AugmentSettings(max_rotation=10, max_translate=0.06, scale_range=(0.9, 1.1)))
    torch.manual_seed(0)
    first, second = transform(pixels), transform(pixels)
    plain = XRayTransform(None)(pixels)
    assert not torch.equal(first, second)
    # Mild: most of the picture stays where it was (the centre is never moved off screen).
    assert (first[:, 24:40, 24:40] - plain[:, 24:40, 24:40]).abs().mean() < 0.5


# --------------------------------------------------------------------------- one pixel limit


@pytest.mark.slow  # a fresh interpreter imports every data and deployment module: ~10 s
def test_importing_the_package_leaves_pillows_global_pixel_limit_alone() -> None:
    """Pillow's ``Image.MAX_IMAGE_PIXELS`` belongs to the application: importing cxrdistill must not change it."""
    import subprocess

    script = (
        "import importlib, pkgutil\n"
        "from PIL import Image\n"
        "before = Image.MAX_IMAGE_PIXELS\n"
        "import cxrdistill, cxrdistill.data, cxrdistill.deployment\n"
        "for package in (cxrdistill.data, cxrdistill.deployment):\n"
        "    for module in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        try:\n"
        "            importlib.import_module(module.name)\n"
        "        except ImportError:\n"
        "            pass  # an optional extra that is not installed\n"
        "print(before, Image.MAX_IMAGE_PIXELS)\n"
    )
    before, after = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                   check=True).stdout.split()
    assert after == before


@pytest.mark.parametrize("pillow_limit", [None, 10**12])
def test_oversized_image_is_refused_per_call_whatever_pillows_global(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_limit: int | None
) -> None:
    """The project's limit is checked by the reader itself, so an application that lifts Pillow's is still safe."""
    from image_files import png_claiming

    from cxrdistill.data.io import MAX_IMAGE_PIXELS, ImageTooLargeError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    path = tmp_path / "large.png"
    path.write_bytes(png_claiming(side, side))
    with pytest.raises(ImageTooLargeError, match=f"{MAX_IMAGE_PIXELS:,}"):
        read_grey(path)
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


def test_the_documents_state_the_enforced_pixel_limit() -> None:
    """SECURITY.md, the README and the data page name the limit the readers enforce, in megapixels."""
    import re

    from cxrdistill.data.io import MAX_IMAGE_PIXELS

    repository = Path(__file__).resolve().parents[1]
    for document in ("SECURITY.md", "README.md", "docs/data.md"):
        stated = re.findall(r"(\d+) (?:megapixels|million pixels)", (repository / document).read_text())
        assert stated, f"{document} does not state the pixel limit"
        assert {int(n) * 1_000_000 for n in stated} == {MAX_IMAGE_PIXELS}, (document, stated)
