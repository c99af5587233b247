"""How often the out-of-distribution check flags chest films of later patients, and how often everything else.

For each trained model (``--model NAME=CKPT``) and each candidate check (score on features), a copy of the
checkpoint is fitted with :func:`cxrdistill.deployment.ood.fit_ood` (train split of its run; threshold at the
99th percentile of its val split) and every image set below goes through ``predict_files``, the path
``cxrdistill predict`` takes. The share flagged per set:

* ``half_a`` — Kermany's half A (``--half-a``), chest films of later patients: should be flagged <= 5 %;
* ``dicom_<modality>`` — pydicom's own test files (``pydicom.data.get_testdata_files()``, shipped inside the
  installed package), each distinct decodable image once, grouped by the DICOM Modality: CT, MR, US, a
  cervical-spine CR, ...;
* ``photographs`` — the photographs shipped with matplotlib and scikit-learn, whole and in four quarters;
* ``limb_radiographs``, ``noise``, ``flat``, ``text`` — images made here (a lower-leg-like radiograph: soft
  tissue and two long bones with cortex; noise; flat grey levels; printed text);

every set but half A should be flagged >= 95 %. The chosen check (the first ``--candidate``) is also
exported to ONNX and must flag exactly the images PyTorch flags. Writes ``shares.json``, ``shares.md``,
``scores.png`` (histogram of the chosen check's scores per set) into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cxrdistill.data.io import read_grey, resize_grey
from cxrdistill.data.layout import scan_dataset
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.ood import FLAG_TEXT, OOD_KEY, fit_ood
from cxrdistill.deployment.predict import predict_files
from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write_json, atomic_write_text
from cxrdistill.provenance import provenance
from cxrdistill.runtime.checkpoint import checkpoint_files, side_file_path

REPO = Path(__file__).resolve().parents[1]
IN_DISTRIBUTION = "half_a"
IN_TARGET, OUT_TARGET = 0.05, 0.95


# -- image sets ------------------------------------------------------------------------------------
def save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def limb_radiograph(rng: np.random.Generator, height: int = 640, width: int = 320) -> np.ndarray:
    """A lower-leg-like film: dark background, a tapered soft-tissue band, tibia and fibula with bright cortex."""
    y, x = np.mgrid[:height, :width].astype(float)
    centre = width / 2 + rng.uniform(-20, 20)
    tissue_half = width * rng.uniform(0.28, 0.36) * (1 - 0.25 * y / height)
    film = 25 + 70 * np.clip(1 - ((x - centre) / tissue_half) ** 2, 0, 1) ** 0.5
    for offset, half_width, brightness in ((-0.12, 0.085, 190), (0.16, 0.035, 170)):  # tibia, fibula
        axis = centre + offset * width + 6 * np.sin(y / height * np.pi)
        flare = 1 + 0.6 * np.exp(-(y / (0.08 * height)) ** 2) + 0.5 * np.exp(-((height - y) / (0.08 * height)) ** 2)
        distance = np.abs(x - axis) / (half_width * width * flare)
        inside = distance < 1
        cortex = np.exp(-((distance - 0.85) / 0.12) ** 2)
        film = np.where(inside, film + brightness * (0.55 + 0.45 * cortex), film)
    film += rng.normal(0, 6, film.shape)
    return np.asarray(Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).rotate(rng.uniform(-8, 8),
                                                                                     fillcolor=25))


def text_image(rng: np.random.Generator) -> np.ndarray:
    """Printed lines of text, black on white or white on black."""
    words = ["patient", "report", "chest", "view", "film", "normal", "clinic", "date", "lung", "name", "exam"]
    dark = bool(rng.integers(2))
    image = Image.new("L", (480, 360), 0 if dark else 255)
    draw = ImageDraw.Draw(image)
    for line in range(14):
        draw.text((12, 10 + 24 * line), " ".join(rng.choice(words, 6)), fill=255 if dark else 0,
                  font_size=int(rng.integers(14, 22)))
    return np.asarray(image)


def made_sets(folder: Path, count: int, seed: int = 0) -> dict[str, list[Path]]:
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (256, 256)) for _ in range(count // 2)]
    noise += [np.asarray(Image.fromarray(rng.normal(128, 60, (256, 256)).clip(0, 255).astype(np.uint8))
                         .resize((512, 512), Image.Resampling.BICUBIC)) for _ in range(count - count // 2)]
    levels = np.linspace(0, 255, count)
    return {
        "limb_radiographs": [save(folder / "limb", f"limb{i}", limb_radiograph(rng)) for i in range(count)],
        "noise": [save(folder / "noise", f"noise{i}", pixels) for i, pixels in enumerate(noise)],
        "flat": [save(folder / "flat", f"flat{i}", np.full((256, 256), level)) for i, level in enumerate(levels)],
        "text": [save(folder / "text", f"text{i}", text_image(rng)) for i in range(count)],
    }


def photographs(folder: Path) -> list[Path]:
    """The photographs the installed matplotlib and scikit-learn ship, whole and in four quarters."""
    import matplotlib.cbook
    import sklearn.datasets

    sources = [Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))
               for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]
    sources += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    paths = []
    for source in sources:
        grey = read_grey(source)
        height, width = grey.shape
        crops = {"whole": grey, **{f"q{i}": grey[(i // 2) * height // 2:(i // 2 + 1) * height // 2,
                                                 (i % 2) * width // 2:(i % 2 + 1) * width // 2] for i in range(4)}}
        paths += [save(folder, f"{source.stem}-{name}", crop) for name, crop in crops.items()]
    return paths


def dicom_sets() -> dict[str, list[Path]]:
    """pydicom's bundled test files that decode to an image, each distinct image once, by Modality."""
    import pydicom
    from pydicom.data import get_testdata_files

    seen, sets = set(), defaultdict(list)
    for name in sorted(get_testdata_files()):
        path = Path(name)
        try:
            grey = read_grey(path)
        except CxrDistillError:
            continue  # no pixel data, or an encoding no installed decoder reads
        digest = hashlib.sha256(resize_grey(grey, 64).tobytes()).hexdigest()
        if digest in seen:
            continue  # the same image in another transfer syntax
        seen.add(digest)
        modality = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", "unknown"))
        sets[f"dicom_{modality or 'unknown'}"].append(path)
    return dict(sorted(sets.items()))


# -- measurement -----------------------------------------------------------------------------------
def fitted_copy(checkpoint: Path, folder: Path, score: str, features: str, max_train: int | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = checkpoint_files(checkpoint)
    copy = folder / files.weights.name
    shutil.copy(files.weights, copy)
    shutil.copy(files.sidecar, checkpoint_files(copy).sidecar)
    fit_ood(copy, score=score, features=features, max_train_images=max_train)
    return copy


def shares(results_by_set: dict[str, list]) -> dict[str, dict]:
    rows = {}
    for name, results in results_by_set.items():
        scored = [r for r in results if r.ood_flag is not None]
        flagged = sum(r.ood_flag for r in scored)
        rows[name] = {"images": len(scored), "flagged": flagged,
                      "share": flagged / len(scored) if scored else None,
                      "target": f"<= {IN_TARGET:.0%}" if name == IN_DISTRIBUTION else f">= {OUT_TARGET:.0%}",
                      "met": None if not scored else (flagged / len(scored) <= IN_TARGET if name == IN_DISTRIBUTION
                                                      else flagged / len(scored) >= OUT_TARGET)}
    return rows


def histogram(scores: dict[str, list[float]], threshold: float, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    values = np.concatenate([np.asarray(v) for v in scores.values()])
    shift = 1 - min(0.0, float(values.min()))  # energy scores are negative: shift before the log axis
    bins = np.geomspace(values.min() + shift, values.max() + shift, 50)
    for name, set_scores in scores.items():
        axes.hist(np.asarray(set_scores) + shift, bins=bins, histtype="step", linewidth=1.5, label=name,
                  density=True)
    axes.axvline(threshold + shift, color="black", linestyle="--", label="threshold (99th pct. of val)")
    axes.set_xscale("log")
    axes.set(xlabel="score" + (f" + {shift:g}" if shift != 1 else " + 1"), ylabel="density", title=title)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    options.add_argument("--candidate", action="append", default=None,
                         help="SCORE:FEATURES to fit and compare (repeatable; the first is exported to ONNX); "
                              "default mahalanobis:pooled_stats, mahalanobis:penultimate, mahalanobis:pooled, "
                              "energy:pooled")
    options.add_argument("--half-a", type=Path, default=REPO.parent / "shared/data/kermany_test_half_a")
    options.add_argument("--max-train-images", type=int, default=None, help="fit on a sample of the train split")
    options.add_argument("--made", type=int, default=20, help="images per made set")
    options.add_argument("--out", type=Path, default=REPO / "benchmarks/results/ood")
    args = options.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    candidates = args.candidate or ["mahalanobis:pooled_stats", "mahalanobis:penultimate", "mahalanobis:pooled",
                                    "energy:pooled"]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"models": {}, "provenance": provenance([f"benchmarks/{Path(__file__).name}", *argv], vars(args))}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sets = {IN_DISTRIBUTION: [r.path for r in scan_dataset(args.half_a)[""]], **dicom_sets(),
                "photographs": photographs(work / "photos"), **made_sets(work / "made", args.made)}
        files = [path for paths in sets.values() for path in paths]
        report["sets"] = {name: len(paths) for name, paths in sets.items()}
        for model_name, checkpoint in (item.split("=", 1) for item in args.model):
            model_report = report["models"][model_name] = {"checkpoint": checkpoint, "candidates": {}}
            for number, candidate in enumerate(candidates):
                score, features = candidate.split(":")
                fitted = fitted_copy(Path(checkpoint), work / model_name / f"{score}-{features}", score, features,
                                     args.max_train_images)
                results = predict_files(fitted, files)
                by_set, start = {}, 0
                for name, paths in sets.items():
                    by_set[name], start = results[start:start + len(paths)], start + len(paths)
                record = json.loads(checkpoint_files(fitted).sidecar.read_text())["metadata"][OOD_KEY]
                entry = model_report["candidates"][candidate] = {"record": record, "shares": shares(by_set)}
                print(model_name, candidate, {k: v["share"] for k, v in entry["shares"].items()}, flush=True)
                write_report(args.out, report)  # after each candidate: a long run's finished part is kept
                if number == 0:
                    onnx_path = export_onnx(fitted, work / model_name / "model.onnx").path
                    from_onnx = predict_files(onnx_path, files)
                    entry["onnx_disagreements"] = sum(a.ood_flag != b.ood_flag for a, b in
                                                      zip(results, from_onnx, strict=True))
                    entry["statistics_bytes"] = side_file_path(fitted, OOD_KEY).stat().st_size if \
                        side_file_path(fitted, OOD_KEY).is_file() else 0
                    histogram({name: [r.ood_score for r in set_results if r.ood_score is not None]
                               for name, set_results in by_set.items()}, record["threshold"],
                              f"{model_name}: {candidate} (flagged: score above the dashed line)",
                              args.out / f"scores-{model_name}.png")
    write_report(args.out, report)
    return report


def write_report(out: Path, report: dict) -> None:
    atomic_write_json(out / "shares.json", report)
    atomic_write_text(out / "shares.md", markdown(report))


def markdown(report: dict) -> str:
    lines = [f"Share of each set flagged as {FLAG_TEXT!r} (targets: half A <= {IN_TARGET:.0%}, "
             f"every other set >= {OUT_TARGET:.0%}).", ""]
    for model_name, model_report in report["models"].items():
        candidates = list(model_report["candidates"])
        lines += [f"### {model_name}", "", "| set | images | " + " | ".join(candidates) + " |",
                  "|---|---:|" + "---:|" * len(candidates)]
        for name, count in report["sets"].items():
            cells = []
            for candidate in candidates:
                row = model_report["candidates"][candidate]["shares"][name]
                cells.append("-" if row["share"] is None else f"{row['share']:.1%}" + ("" if row["met"] else " ✗"))
            lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
        first = model_report["candidates"][candidates[0]]
        lines += ["", "Thresholds: " + "; ".join(f"{c}: {model_report['candidates'][c]['record']['threshold']:.4g}"
                                                  for c in candidates) + "."]
        if "onnx_disagreements" in first:
            lines[-1] += (f" ONNX Runtime vs PyTorch ({candidates[0]}): {first['onnx_disagreements']} images flagged "
                          f"differently; statistics file {first['statistics_bytes'] / 1024:.1f} KiB.")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
