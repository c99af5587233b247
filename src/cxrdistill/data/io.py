"""Reading one X-ray file into an 8-bit grey-scale array, whatever its format.

Every image passes through :func:`read_grey` (files) or :func:`decode_grey` (open streams, such as
uploads held in memory), so there is one place that knows about bit depths, colour modes, EXIF rotation,
DICOM windowing and oversized files. Feeding the wrong intensity range is the most common silent error
with X-rays, so high-bit-depth inputs are windowed to 8 bits explicitly and near-constant images raise a
warning instead of quietly becoming a black square.

Every reader checks the pixel count against :data:`MAX_IMAGE_PIXELS` from the file's header, before
decoding: a small PNG or DICOM can claim billions of pixels (a decompression bomb), and a server that
decodes uploads must refuse those instead of running out of memory. The check is made by each reader
on each call, so Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` is left as the application set it
(importing cxrdistill changes no global); Pillow's own ``DecompressionBombError``, raised when that
global limit is lower or far exceeded, becomes the same :class:`ImageTooLargeError`. The explicit
check, not a warning filter or Pillow's global, is the guarantee: both are process-wide.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrdistill.config.schema import MAX_BORDER_CROP
from cxrdistill.errors import CxrDistillError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm"})
MAX_IMAGE_PIXELS = 50_000_000
"""The most pixels any reader (PNG, JPEG, TIFF, BMP, DICOM) accepts, 50 megapixels: above the largest chest
detectors (43 cm at 70 um, 6100 x 6100 = 37 M), far below what a small compressed file can expand to."""


class UnreadableImageError(CxrDistillError, ValueError):
    """A file that cannot be decoded as an X-ray image; the message names the file and the cause."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ImageTooLargeError(UnreadableImageError):
    """An image with more pixels than :data:`MAX_IMAGE_PIXELS`, refused before its pixels are decoded."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _to_uint8(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Window any numeric array to 0..255 by its own range (min-max); 8-bit input passes unchanged."""
    if pixels.dtype == np.uint8:
        return pixels
    pixels = pixels.astype(np.float64)
    low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if high - low < 1e-6:
        warnings.warn(f"{path}: image is constant ({low}); it will be all black", stacklevel=3)
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


def _read_dicom(stream: BinaryIO, source: str | Path) -> np.ndarray:
    """Decode a single-frame grey DICOM as a radiologist's viewer would show it (bone bright).

    Stored values go through the modality LUT (rescale slope/intercept, or a LUT) and then the file's own
    VOI transform (window centre/width, or a VOI LUT), mapped to 0..255 over the window's output range;
    without a VOI the image is windowed by its own range. Rows x Columns are checked against
    :data:`MAX_IMAGE_PIXELS` before any pixel is decoded.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as error:
        raise UnreadableImageError(source, "DICOM support needs pydicom 3: pip install 'cxrdistill[dicom]'") from error
    try:
        dataset = pydicom.dcmread(stream)
    except Exception as error:  # pydicom raises many kinds; all mean "not a usable DICOM file"
        raise UnreadableImageError(source, f"not a readable DICOM file ({error})") from error
    if not any(key in dataset for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UnreadableImageError(source, "DICOM file has no pixel data (a report or other non-image object?)")
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    except Exception as error:  # a damaged header element
        raise UnreadableImageError(source, f"not a readable DICOM header ({error})") from error
    if frames > 1:
        raise UnreadableImageError(source, f"multi-frame DICOM ({frames} frames); export the one radiograph "
                                           "as a single-frame file")
    _check_pixel_count(rows, columns, source)
    try:
        stored = dataset.pixel_array
    except Exception as error:  # unsupported compression, truncated pixel data, ...
        raise UnreadableImageError(source, f"DICOM pixel data cannot be decoded ({error})") from error
    if stored.ndim != 2:
        raise UnreadableImageError(source, f"expected one grey 2-D DICOM frame, got pixel data of shape {stored.shape}")
    try:
        values = apply_modality_lut(stored, dataset)
        if "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset):
            # The window's output range (what a display shows as black and white) comes from the same
            # transform applied to values far below and above any window.
            black, white = sorted(apply_voi_lut(np.array([-1e12, 1e12]), dataset).tolist())
            windowed = apply_voi_lut(values.astype(np.float64), dataset)
            grey = np.round(np.clip((windowed - black) / max(white - black, 1e-6), 0, 1) * 255).astype(np.uint8)
        else:
            grey = _to_uint8(values, source)
    except Exception as error:  # a broken rescale value, window or LUT (found by the fuzz test)
        raise UnreadableImageError(source, f"DICOM intensity transform unusable ({error})") from error
    # MONOCHROME1 stores bone dark; invert so every image shows bone bright, as the models were trained.
    if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _check_pixel_count(height: int, width: int, source: str | Path) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(source, f"image too large: {width} x {height} pixels is more than the limit of "
                                         f"{MAX_IMAGE_PIXELS:,} "
                                         "(a decompression bomb, or not a radiograph)")


def _read_pil(stream: BinaryIO, source: str | Path) -> np.ndarray:
    try:
        with Image.open(stream) as image:
            _check_pixel_count(image.height, image.width, source)  # header only: nothing decoded yet
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _to_uint8(np.asarray(image), source)
            if image.mode != "L":
                # RGB copies of grey X-rays (like the shared 224-px set) carry the same value in each channel.
                image = image.convert("L")
            return np.asarray(image, dtype=np.uint8).copy()
    except UnreadableImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(source, f"image too large: more pixels than the limit of {MAX_IMAGE_PIXELS:,} "
                                         f"({error})") from error
    except UnidentifiedImageError as error:
        raise UnreadableImageError(source, "not an image file (format not recognised)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # what Pillow's decoders raise for broken files
        raise UnreadableImageError(source, f"corrupt or truncated image ({error})") from error


def is_dicom(stream: BinaryIO) -> bool:
    """The DICOM file marker (``DICM`` after a 128-byte preamble); the stream is left where it was."""
    position = stream.tell()
    head = stream.read(132)
    stream.seek(position)
    return head[128:132] == b"DICM"


def decode_grey(stream: BinaryIO, source: str | Path, dicom: bool | None = None) -> np.ndarray:
    """Decode an open binary stream (a file, or an upload held in memory) like :func:`read_grey`.

    ``source`` names the image in error messages; ``dicom`` forces the DICOM reader (default: the
    ``DICM`` marker decides).
    """
    if dicom or (dicom is None and is_dicom(stream)):
        return _read_dicom(stream, source)
    return _read_pil(stream, source)


def read_grey(path: str | Path) -> np.ndarray:
    """Decode ``path`` to a 2-D ``uint8`` array (bone bright), from JPEG, PNG (8/16-bit), TIFF, BMP or DICOM.

    DICOM is recognised by its ``.dcm`` suffix or, for the many clinical files without one, its marker.
    """
    path = Path(path)
    try:
        stream = path.open("rb")
    except OSError as error:
        raise UnreadableImageError(path, f"cannot open ({error.strerror})") from error
    with stream:
        return decode_grey(stream, path, dicom=True if path.suffix.lower() == ".dcm" else None)


def resize_grey(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (aspect not kept, as in the published 224-px copy), antialiased."""
    if pixels.shape == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def crop_border(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """Cut ``fraction`` of the height off the top and bottom and of the width off each side.

    Edge strips carry collection cues that have nothing to do with the lungs (side markers, padding, how a
    film was framed); cropping them before the resize keeps a model from reading the label off them.
    """
    if not 0.0 <= fraction < MAX_BORDER_CROP:
        raise ValueError(f"border crop {fraction} must be in [0, {MAX_BORDER_CROP})")
    height, width = pixels.shape
    top, left = round(height * fraction), round(width * fraction)
    if not (top or left):
        return pixels
    return pixels[top:height - top, left:width - left]


def load_for_model(path: str | Path, size: int, border_crop: float = 0.0) -> np.ndarray:
    """Decoded, border-cropped and resized ``uint8`` pixels: the stage the decoded-image cache stores."""
    return resize_grey(crop_border(read_grey(path), border_crop), size)
