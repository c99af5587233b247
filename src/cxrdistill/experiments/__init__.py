"""Whole experiments, the top floor under the CLI: one run, comparisons, sweeps, the demo and the reproduction
with its report. Everything below (training, distillation, evaluation) knows nothing of them."""
