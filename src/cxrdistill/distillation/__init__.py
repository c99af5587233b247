"""Knowledge distillation: losses by name, teacher outputs (online or cached) and the KD objective."""

from cxrdistill.exports import lazy_exports

__all__ = ["DistillationObjective", "KnowledgeDistillationLoss", "build_distillation_loss", "build_objective"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "losses": ("KnowledgeDistillationLoss", "build_distillation_loss"),
    "objective": ("DistillationObjective", "build_objective"),
})
