"""Knowledge distillation: losses by name, teacher outputs (online, cached or shipped as soft targets) and the
KD objective."""

from cxrdistill.exports import lazy_exports

__all__ = ["DistillationObjective", "KnowledgeDistillationLoss", "build_distillation_loss", "build_objective",
           "read_soft_targets", "write_soft_targets"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "losses": ("KnowledgeDistillationLoss", "build_distillation_loss"),
    "objective": ("DistillationObjective", "build_objective"),
    "soft_targets": ("read_soft_targets", "write_soft_targets"),
})
