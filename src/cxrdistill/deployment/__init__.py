"""Deployment: exporting (ONNX, INT8), predicting on files, serving, heat maps and the cost of a model.

Names load on first use: ``create_app`` and ``serve`` need the ``serve`` extra, the exporters the ``deploy`` extra."""

from cxrdistill.exports import lazy_exports

__all__ = ["FilePrediction", "Predictor", "ResourceProfile", "create_app", "export_int8", "export_onnx",
           "int8_agreement", "predict_files", "profile_model", "serve", "write_model_card",
           "write_predictions_csv"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "export": ("export_onnx",),
    "model_card": ("write_model_card",),
    "predict": ("FilePrediction", "Predictor", "predict_files", "write_predictions_csv"),
    "profile": ("ResourceProfile", "profile_model"),
    "quantize": ("export_int8", "int8_agreement"),
    "service": ("create_app", "serve"),
})
