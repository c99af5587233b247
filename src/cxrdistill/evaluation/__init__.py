"""Evaluation: metrics with bootstrap intervals (scikit-learn), predictions, plots, checkpoint evaluation, and
the operating point (threshold and temperature) fitted after training or at a site."""

from cxrdistill.exports import lazy_exports

__all__ = ["EvaluationReport", "MetricEstimate", "Predictions", "binary_metrics", "bootstrap_metrics",
           "calibrate_and_evaluate", "calibrate_checkpoint", "choose_threshold", "evaluate_checkpoint", "evaluate_run",
           "predict", "threshold_in_use"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "calibrate": ("calibrate_and_evaluate", "calibrate_checkpoint"),
    "operating_point": ("choose_threshold", "threshold_in_use"),
    "evaluate": ("EvaluationReport", "evaluate_checkpoint", "evaluate_run"),
    "metrics": ("MetricEstimate", "binary_metrics", "bootstrap_metrics"),
    "predict": ("Predictions", "predict"),
})
