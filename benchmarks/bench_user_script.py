"""What a user gets without cxrdistill: the ~50-line script a careful PyTorch user writes, on the same data.

torchvision ``ImageFolder`` over the training split's files, AlexNet from scratch at 128 px, SGD (lr 0.01,
momentum 0.9, weight decay 1e-4) with cosine decay, class-weighted cross-entropy, batch 64, 10 epochs,
the last epoch's weights, threshold 0.5 — the baseline measured in the new-cohort issue. It trains on
exactly the images of the project's patient-wise training split (symlinked into an ``ImageFolder``
tree), and is scored on the internal test split and on each external folder with the project's metrics
(95 % bootstrap intervals), so its row can stand beside the project's recipes in any comparison.

Speed: training images/s of the script's loop against the project's ``Trainer`` running a recipe
(``--recipe CONFIG``) on the same split, measured in the same run (train steps only, no validation).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import parse, parser, write_result
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

from cxrdistill.config import load_config
from cxrdistill.data.dataset import build_loaders, resolve_split
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord, scan_dataset
from cxrdistill.evaluation.metrics import bootstrap_metrics
from cxrdistill.experiments.run import supervised_objective
from cxrdistill.models import create_model, input_size
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.training.trainer import Trainer

NAME = "bench_user_script"
REPORTED = ("accuracy", "sensitivity", "specificity", "roc_auc")


def user_transform(size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def image_folder(records: list[ImageRecord], folder: Path, size: int) -> datasets.ImageFolder:
    """An ``ImageFolder`` tree of symlinks to ``records`` — the user's view of the same files."""
    for index, record in enumerate(records):
        target = folder / record.class_name / f"{index:06d}{record.path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(record.path.resolve())
    dataset = datasets.ImageFolder(str(folder), transform=user_transform(size))
    assert dataset.classes == list(CLASS_NAMES), dataset.classes
    return dataset


def train_user_script(train: datasets.ImageFolder, epochs: int, size: int, seed: int) -> tuple[nn.Module, list[float]]:
    """The user's loop, as written; returns the last epoch's model and each epoch's training images/s."""
    torch.manual_seed(seed)
    model = models.alexnet(weights=None, num_classes=2)
    counts = torch.bincount(torch.tensor(train.targets), minlength=2).float()
    criterion = nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=1)
    speeds = []
    for epoch in range(epochs):
        model.train()
        started, seen = time.perf_counter(), 0
        for images, labels in loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            seen += labels.shape[0]
        scheduler.step()
        speeds.append(seen / (time.perf_counter() - started))
        print(f"user script seed {seed} epoch {epoch + 1}/{epochs}: {speeds[-1]:.1f} images/s, loss {loss.item():.4f}")
    return model, speeds


@torch.no_grad()
def score(model: nn.Module, records: list[ImageRecord], size: int, n_bootstrap: int) -> dict:
    """The user's evaluation: the training transform, the last epoch's model, threshold 0.5."""
    transform = user_transform(size)
    model.eval()
    probs = []
    for start in range(0, len(records), 64):
        batch = []
        for record in records[start:start + 64]:
            with Image.open(record.path) as image:
                batch.append(transform(image.convert("RGB")))
        probs.append(torch.softmax(model(torch.stack(batch)), dim=1)[:, 1])
    prob = torch.cat(probs).numpy()
    labels = np.array([r.label for r in records])
    estimates = bootstrap_metrics(labels, prob, n_resamples=n_bootstrap)
    return {name: {"value": estimates[name].value, "low": estimates[name].low, "high": estimates[name].high}
            for name in REPORTED}


def project_speed(config_path: Path, overrides: list[str], epochs: int) -> list[float]:
    """Training images/s of the project's Trainer on the recipe, on the same split (train steps only)."""
    config = load_config(config_path, overrides)
    size = input_size(config.model, config.data.image_size)
    torch.manual_seed(config.train.seed)
    bundle = build_loaders(config.data, Path(config.data.root), size, config.train.seed, progress=False)
    precision = resolve_precision(torch.device("cpu"), "off")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(create_model(config.model, image_size=size), supervised_objective(config, bundle),
                          config.train, precision, Path(scratch), {"architecture": config.model.name}, size, False)
        speeds = []
        for _ in range(epochs):
            started = time.perf_counter()
            trainer.train_epoch(bundle.loaders["train"])
            trainer.state.epoch += 1
            speeds.append(len(bundle.datasets["train"]) / (time.perf_counter() - started))
            print(f"project recipe epoch {len(speeds)}/{epochs}: {speeds[-1]:.1f} images/s")
    return speeds


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--data", type=Path, required=True, help="Kermany-layout root (its train/ is split)")
    options.add_argument("--external", type=Path, action="append", default=[], help="labelled folder(s) to score")
    options.add_argument("--recipe", type=Path, default=None, help="project config whose training speed to compare")
    options.add_argument("--seeds", type=int, default=1)
    options.add_argument("--epochs", type=int, default=10)
    options.add_argument("--size", type=int, default=128)
    options.add_argument("--bootstrap", type=int, default=1000)
    options.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.max_per_class=800")
    args, argv = parse(options, argv)
    if args.quick:
        args.seeds, args.epochs, args.bootstrap = 1, 1, 50
    overrides = [f"data.root={args.data}", *args.overrides]
    data_config = load_config(args.recipe, overrides).data
    split = resolve_split(data_config, args.data)
    evaluation_sets = {"internal test": split["test"]}
    for folder in args.external:
        evaluation_sets[f"external {folder.name}"] = [r for records in scan_dataset(folder).values() for r in records]

    runs = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as scratch:
            train = image_folder(split["train"], Path(scratch), args.size)
            model, speeds = train_user_script(train, args.epochs, args.size, seed)
        scores = {name: score(model, records, args.size, args.bootstrap) for name, records in evaluation_sets.items()}
        runs.append({"seed": seed, "images_per_s": speeds, "metrics": scores})
        for name, metrics in scores.items():
            print(f"seed {seed} {name}: " + ", ".join(f"{m} {v['value']:.3f}" for m, v in metrics.items()))

    settings = {"size": args.size, "epochs": args.epochs, "seeds": args.seeds, "train_images": len(split["train"]),
                "overrides": overrides}
    payload: dict = {"runs": runs}
    if args.recipe is not None:
        project = project_speed(args.recipe, overrides, 1 if args.quick else 2)
        user_median = float(np.median([s for run in runs for s in run["images_per_s"]]))
        payload["speed"] = {"recipe": str(args.recipe), "project_images_per_s": project,
                            "user_images_per_s_median": user_median,
                            "project_over_user": float(np.median(project)) / user_median}
        print(f"training speed, project recipe / user script: {payload['speed']['project_over_user']:.2f}x")
    write_result(NAME, __file__, argv, args, settings, payload)


if __name__ == "__main__":
    main()
