"""Evaluation: metrics with bootstrap intervals (scikit-learn), predictions, plots and checkpoint evaluation."""

from cxrdistill.exports import lazy_exports

__all__ = ["EvaluationReport", "MetricEstimate", "Predictions", "binary_metrics", "bootstrap_metrics",
           "evaluate_checkpoint", "evaluate_run", "predict"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "evaluate": ("EvaluationReport", "evaluate_checkpoint", "evaluate_run"),
    "metrics": ("MetricEstimate", "binary_metrics", "bootstrap_metrics"),
    "predict": ("Predictions", "predict"),
})
