"""Clinical DICOM reading (modality LUT, VOI window, MONOCHROME1, refusals) and the pixel limit of every reader."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from image_files import png_claiming, write_dicom
from PIL import Image

from cxrdistill.data.io import MAX_IMAGE_PIXELS, ImageTooLargeError, UnreadableImageError, decode_grey, read_grey

pytest.importorskip("pydicom", reason="DICOM support is the optional 'dicom' extra")

RAMP_12BIT = np.linspace(0, 4095, 16 * 24).round().reshape(16, 24).astype(np.uint16)


def test_8bit_dicom_without_window_reads_exactly(tmp_path: Path) -> None:
    stored = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    np.testing.assert_array_equal(read_grey(write_dicom(tmp_path / "a.dcm", stored)), stored)


def test_16bit_dicom_without_window_is_windowed_by_its_own_range(tmp_path: Path) -> None:
    grey = read_grey(write_dicom(tmp_path / "a.dcm", RAMP_12BIT // 2 + 100, bits_stored=12))
    assert grey.dtype == np.uint8 and grey.shape == (16, 24)
    assert grey.min() == 0 and grey.max() == 255 and np.all(np.diff(grey.ravel().astype(int)) >= 0)


def test_voi_window_maps_centre_and_width_to_black_and_white(tmp_path: Path) -> None:
    grey = read_grey(write_dicom(tmp_path / "w.dcm", RAMP_12BIT, bits_stored=12, window=(1000, 400)))
    stored = RAMP_12BIT.astype(float)
    assert np.all(grey[stored <= 800] == 0) and np.all(grey[stored >= 1200] == 255)
    inside = (stored > 820) & (stored < 1180)
    expected = ((stored[inside] - 0.5 - (1000 - 0.5)) / (400 - 1) + 0.5) * 255  # DICOM's LINEAR window
    assert inside.sum() > 5 and np.abs(grey[inside] - expected).max() <= 2


def test_modality_rescale_comes_before_the_window(tmp_path: Path) -> None:
    # Stored s shows as 2 s - 1000; the window is in those output units: 1000 +- 200 <=> stored 900..1100.
    path = write_dicom(tmp_path / "r.dcm", RAMP_12BIT, bits_stored=12, window=(1000, 400), rescale=(2.0, -1000.0))
    grey, shown = read_grey(path), 2.0 * RAMP_12BIT - 1000
    assert np.all(grey[shown <= 800] == 0) and np.all(grey[shown >= 1200] == 255)
    inside = (shown > 820) & (shown < 1180)
    assert inside.sum() >= 2 and np.abs(grey[inside] - ((shown[inside] - 999.5) / 399 + 0.5) * 255).max() <= 2


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    plain = read_grey(write_dicom(tmp_path / "m2.dcm", RAMP_12BIT, bits_stored=12, window=(2000, 1000)))
    inverted = read_grey(write_dicom(tmp_path / "m1.dcm", RAMP_12BIT, "MONOCHROME1", bits_stored=12,
                                     window=(2000, 1000)))
    np.testing.assert_array_equal(inverted.astype(int), 255 - plain.astype(int))
    assert inverted[0, 0] == 255 and inverted[-1, -1] == 0  # low stored values are bright in MONOCHROME1


def test_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", RAMP_12BIT, pixel_data=False)
    with pytest.raises(UnreadableImageError, match="no pixel data") as info:
        read_grey(path)
    assert str(path) in str(info.value)


def test_multi_frame_dicom_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cine.dcm", np.stack([RAMP_12BIT] * 3))
    with pytest.raises(UnreadableImageError, match=r"multi-frame DICOM \(3 frames\)"):
        read_grey(path)


def test_dicom_claiming_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    # The header claims 60000 x 60000 but holds a few bytes: decoding would fail differently (or explode).
    path = write_dicom(tmp_path / "bomb.dcm", RAMP_12BIT, rows_columns=(60000, 60000))
    with pytest.raises(ImageTooLargeError, match="limit"):
        read_grey(path)


def test_garbage_with_dicom_suffix_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"not a dicom file at all")
    with pytest.raises(UnreadableImageError, match="not a readable DICOM"):
        read_grey(path)


def test_dicom_without_suffix_is_recognised_by_its_marker_in_files_and_streams(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", RAMP_12BIT, bits_stored=12, window=(2000, 4000))
    from_file = read_grey(path)
    from_memory = decode_grey(io.BytesIO(path.read_bytes()), "upload")
    np.testing.assert_array_equal(from_file, from_memory)
    assert from_file.shape == (16, 24) and from_file[-1, -1] > from_file[0, 0]


# --------------------------------------------------------------------------- pixel limit (PIL readers)


@pytest.mark.parametrize("warning_filter", ["ignore", "error"])
@pytest.mark.parametrize("side", [8000, 20000])  # 64 M (PIL warns) and 400 M pixels (PIL's own error)
def test_png_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path, side: int, warning_filter: str) -> None:
    assert side * side > MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter(warning_filter, Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError, match="limit"):
            read_grey(path)


def test_png_at_a_normal_size_passes_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("L", (300, 200), 7).save(path)
    assert read_grey(path).shape == (200, 300)
