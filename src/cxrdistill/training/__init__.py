"""Training: the loop, the supervised objective and its class weights."""

from cxrdistill.exports import lazy_exports

__all__ = ["NonFiniteLossError", "SupervisedObjective", "Trainer", "TrainingInterrupted", "seed_everything"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "objectives": ("SupervisedObjective",),
    "trainer": ("NonFiniteLossError", "Trainer", "TrainingInterrupted", "seed_everything"),
})
