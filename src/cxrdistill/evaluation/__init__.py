"""Evaluation: metrics with bootstrap intervals (scikit-learn), predictions, plots and checkpoint evaluation."""
