"""Whole experiments, the library's top floor: one run, comparisons, sweeps and the demo.
Everything below (training, distillation, evaluation) knows nothing of them; the paper's study
(``cxrdistill.paper``) is built on them."""

from cxrdistill.exports import lazy_exports

__all__ = ["Comparison", "RunResult", "compare", "run_demo", "run_experiment", "sweep_temperature",
           "train_or_resume"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "compare": ("Comparison", "compare"),
    "demo": ("run_demo",),
    "run": ("RunResult", "run_experiment", "train_or_resume"),
    "sweep": ("sweep_temperature",),
})
