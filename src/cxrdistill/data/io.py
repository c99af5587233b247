"""Reading one X-ray file into an 8-bit grey-scale array, whatever its format.

Every image passes through :func:`read_grey`, so there is one place that knows about bit depths,
colour modes, EXIF rotation and DICOM. Feeding the wrong intensity range is the most common silent
error with X-rays, so high-bit-depth inputs are windowed to 8 bits explicitly and near-constant images
raise a warning instead of quietly becoming a black square.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrdistill.errors import CxrDistillError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm"})
MAX_IMAGE_PIXELS = 64_000_000
"""Larger images (8000 x 8000; chest films are at most about 4300 x 3500) are refused before decoding: a
small file can declare a huge image (a decompression bomb)."""


class UnreadableImageError(CxrDistillError, ValueError):
    """A file that cannot be decoded as an X-ray image; the message names the file and the cause."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _to_uint8(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Window any numeric array to 0..255 by its own range (min-max); 8-bit input passes unchanged."""
    if pixels.dtype == np.uint8:
        return pixels
    pixels = pixels.astype(np.float64)
    low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if high - low < 1e-6:
        warnings.warn(f"{path}: image is constant ({low}); it will be all black", stacklevel=3)
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as error:
        raise UnreadableImageError(
            path, "DICOM support needs pydicom: pip install 'cxrdistill[dicom]'"
        ) from error
    try:
        dataset = pydicom.dcmread(path)
        declared = [int(getattr(dataset, key, 1) or 1) for key in ("Rows", "Columns", "NumberOfFrames")]
        _check_pixel_count(int(np.prod(declared, dtype=object)), path)
        pixels = dataset.pixel_array.astype(np.float64)
        slope, intercept = float(getattr(dataset, "RescaleSlope", 1)), float(getattr(dataset, "RescaleIntercept", 0))
    except UnreadableImageError:
        raise
    except Exception as error:  # pydicom raises many kinds; all mean "not a usable DICOM image"
        raise UnreadableImageError(path, f"not a readable DICOM image ({error})") from error
    if pixels.ndim != 2:
        raise UnreadableImageError(path, f"expected a single 2-D DICOM frame, got shape {pixels.shape}")
    pixels = pixels * slope + intercept
    grey = _to_uint8(pixels, path)
    # MONOCHROME1 stores bone dark; invert so every image shows bone bright, as the models were trained.
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _check_pixel_count(pixels: int, path: Path) -> None:
    if pixels > MAX_IMAGE_PIXELS:
        raise UnreadableImageError(path, f"image too large ({pixels} pixels; at most {MAX_IMAGE_PIXELS} are read)")


def read_grey(path: str | Path) -> np.ndarray:
    """Decode ``path`` to a 2-D ``uint8`` array (bone bright), from JPEG, PNG (8/16-bit), TIFF, BMP or DICOM."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return _read_dicom(path)
    try:
        with Image.open(path) as image:
            _check_pixel_count(image.width * image.height, path)
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _to_uint8(np.asarray(image), path)
            if image.mode != "L":
                # RGB copies of grey X-rays (like the shared 224-px set) carry the same value in each channel.
                image = image.convert("L")
            return np.asarray(image, dtype=np.uint8).copy()
    except UnreadableImageError:
        raise
    except UnidentifiedImageError as error:
        raise UnreadableImageError(path, "not an image file (format not recognised)") from error
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(path, f"image too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # what Pillow's decoders raise for broken files
        raise UnreadableImageError(path, f"corrupt or truncated image ({error})") from error


def resize_grey(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (aspect not kept, as in the published 224-px copy), antialiased."""
    if pixels.shape == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    return resize_grey(read_grey(path), size)
