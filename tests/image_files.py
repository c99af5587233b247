"""Test images written for real: DICOM with pydicom (8/16-bit, windows, rescale, multi-frame, no pixels) and a
PNG whose header claims more pixels than it holds (a decompression bomb)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                pixel_data: bool = True, rows_columns: tuple[int, int] | None = None) -> Path:
    """A single- or multi-frame (``stored`` of 3 dimensions) grey DICOM; ``window`` is (centre, width),
    ``rescale`` (slope, intercept); ``rows_columns`` overrides the header's claimed size."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = rows_columns or stored.shape[-2:]
    if stored.ndim == 3:
        dataset.NumberOfFrames = stored.shape[0]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    allocated = stored.dtype.itemsize * 8
    dataset.BitsAllocated = allocated
    dataset.BitsStored = bits_stored or allocated
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
        dataset.RescaleType = "US"
    if pixel_data:
        dataset.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header is rewritten to claim ``width`` x ``height`` (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)
