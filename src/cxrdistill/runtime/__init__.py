"""What training, evaluation and deployment all stand on: checkpoints, devices and precision, process groups,
measuring a process."""

from cxrdistill.exports import lazy_exports

__all__ = ["CheckpointError", "DeviceNotAvailableError", "GpuSampler", "Precision", "checkpoint_metadata",
           "current_rss_mb", "load_checkpoint", "load_served_model", "model_from_checkpoint", "peak_rss_mb",
           "read_metadata", "reset_peak_rss", "resolve_device", "resolve_precision", "run_in_fresh_process",
           "save_checkpoint"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "checkpoint": ("CheckpointError", "checkpoint_metadata", "load_checkpoint", "model_from_checkpoint",
                   "read_metadata", "save_checkpoint"),
    "device": ("DeviceNotAvailableError", "Precision", "resolve_device", "resolve_precision"),
    "served": ("load_served_model",),
    "resources": ("GpuSampler", "current_rss_mb", "peak_rss_mb", "reset_peak_rss", "run_in_fresh_process"),
})
