"""Whole experiments, the library's top floor: one run, comparisons, sweeps and the demo.
Everything below (training, distillation, evaluation) knows nothing of them; the paper's study
(``cxrdistill.paper``) is built on them."""
