"""New-cohort diagnostic: the study teacher's P(PNEUMONIA) on the training images as it saw them in training
(cpu/teacher's augmentation) and as the robust students see them (intensity augmentation and
resized crops): what consistent distillation hands the student as soft targets.

Run from the repository root: PYTHONPATH=src python benchmarks/new_cohort_teacher_views.py
(needs the study teacher, runs/study/teacher: see benchmarks/results/new-cohort/study/commands.sh; its output
as run is in that folder's diag/teacher_on_views.txt).
"""
from pathlib import Path

import torch

from cxrdistill.config import load_config
from cxrdistill.data.dataset import build_loaders
from cxrdistill.runtime.checkpoint import model_from_checkpoint

torch.set_num_threads(1)
OVERRIDES = ["data.root=../shared/data/chest_xray_224", "data.max_per_class=400", "data.num_workers=0"]
teacher, _ = model_from_checkpoint("runs/study/teacher/best.safetensors")
teacher.eval()
for label, config_path in (("teacher's own training views", "cpu/teacher"),
                           ("robust students' views", "cpu/robust/student")):
    config = load_config(config_path, OVERRIDES)
    bundle = build_loaders(config.data, Path(config.data.root), 96, 0, progress=False)
    torch.manual_seed(0)
    probs, labels = [], []
    with torch.no_grad():
        for batch in bundle.loaders["train"]:
            images, targets = batch["image"], batch["label"]
            probs.append(torch.softmax(teacher(images), 1)[:, 1])
            labels.append(targets)
    p, y = torch.cat(probs), torch.cat(labels)
    print(f"{label}: mean P(PNEUMONIA) normal {p[y == 0].mean():.3f}, pneumonia {p[y == 1].mean():.3f}; "
          f"share of NORMAL images the teacher calls PNEUMONIA (>0.5) {(p[y == 0] > 0.5).float().mean():.3f}; "
          f"share of all images it calls PNEUMONIA {(p > 0.5).float().mean():.3f}")
