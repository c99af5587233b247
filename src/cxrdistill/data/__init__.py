"""Data: reading X-rays of any format, the Kermany layout, patient-wise splits, a decoded cache, synthetic data."""

from cxrdistill.data.io import UnreadableImageError, read_grey
from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError, ImageRecord, scan_dataset

__all__ = ["CLASS_NAMES", "DatasetLayoutError", "ImageRecord", "UnreadableImageError", "read_grey", "scan_dataset"]
