"""Shortcut audit: how well trivial, non-anatomical image statistics predict the label.

A classifier can learn the data set instead of the disease: radiology collections are known for
labels that can be read off text markers, borders, scanner or JPEG settings and image size. This module
measures a few such cues per image (file size and format, image size, JPEG quantisation tables, the
intensity histogram, borders, bright marks and edges in the corners) and asks scikit-learn how well they
predict the label: a cross-validated ROC AUC per split folder (folds grouped by patient, so no patient
is on both sides), per feature group (which cue carries it), and, for external folders, a model fitted
on the training folder and scored there. A cue that predicts the label well is a warning, not proof:
the intensity histogram also carries real signal (consolidation brightens the lungs), the border and
corner groups should not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from cxrdistill.data.io import UnreadableImageError, crop_border, read_grey, resize_grey
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord
from cxrdistill.registry import Registry

SHORTCUT_WARNING_AUC = 0.75
"""A cue group whose AUC reaches this is reported as a likely shortcut.

At 0.75 a trivial statistic ranks a random pneumonia film above a random normal one three times in four:
a network finds such a cue faster than anatomy, and its accuracy then says little about new hospitals.
Chance is 0.5; the features are crude, so anything far above it means the classes differ in how the
images were made or stored, not only in the lungs.
"""
ANALYSIS_SIDE = 128
"""Pixel statistics are taken on the image resized to this square: fast, and comparable across image sizes."""
BORDER_FRACTION = 0.06
"""Width of the edge strips, as a share of the side."""
CORNER_FRACTION = 0.18
"""Side of the corner patches (where side markers and text are burnt in), as a share of the side."""
BRIGHT_LEVEL = 230
DARK_LEVEL = 10
EDGE_LEVEL = 40
"""Grey-level thresholds (8 bits): near-white and near-black pixels, and a gradient that counts as an edge."""
FLAT_LINE_STD = 2.0
"""An edge row or column whose grey levels vary less than this is padding, not film."""
FOLDS = 5
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "BMP", "DICOM")
STANDARD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
"""The JPEG standard's luminance quantisation table (Annex K, quality 50), row by row."""


@dataclass(frozen=True)
class ImageFacts:
    """What the features of one image are computed from: its file, header and a fixed-size grey copy."""

    file_bytes: int
    width: int
    height: int
    format: str
    quantization: dict[int, list[int]]
    pixels: np.ndarray
    """Grey levels (float32, 0-255) at ``ANALYSIS_SIDE`` x ``ANALYSIS_SIDE``."""


FeatureGroup = Callable[[ImageFacts], dict[str, float]]
FEATURE_GROUPS: Registry[FeatureGroup] = Registry("shortcut feature group")
CLASSIFIERS: Registry[Callable[[], ClassifierMixin]] = Registry("shortcut classifier")


def image_facts(path: Path, grey: np.ndarray) -> ImageFacts:
    """Header facts of ``path`` (read without decoding again) and the decoded ``grey`` image resized."""
    if path.suffix.lower() == ".dcm":
        file_format, quantization = "DICOM", {}
    else:
        with Image.open(path) as image:
            file_format = image.format or "unknown"
            quantization = {int(k): list(v) for k, v in (getattr(image, "quantization", None) or {}).items()}
    pixels = resize_grey(grey, ANALYSIS_SIDE).astype(np.float32)
    return ImageFacts(path.stat().st_size, grey.shape[1], grey.shape[0], file_format, quantization, pixels)


def ijg_luminance_table(quality: int) -> np.ndarray:
    """The luminance table the IJG library (and Pillow) writes at ``quality``, entries clamped to 1-255."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((STANDARD_LUMINANCE * scale + 50) // 100, 1, 255)


IJG_TABLES = np.stack([ijg_luminance_table(quality) for quality in range(1, 101)])


def jpeg_quality(luminance: Sequence[int]) -> float:
    """The IJG quality (1-100) whose luminance table is nearest to ``luminance`` (its 64 entries).

    Entries are compared sorted, so the order a reader lists them in (zig-zag or row by row) does not matter.
    """
    distance = np.abs(np.sort(IJG_TABLES, axis=1) - np.sort(np.asarray(luminance, dtype=np.int64))).sum(axis=1)
    return float(np.argmin(distance) + 1)


@FEATURE_GROUPS.register("file")
def file_features(facts: ImageFacts) -> dict[str, float]:
    """How many bytes the file holds (compression and content) and its container format."""
    features = {"log_file_bytes": math.log(max(facts.file_bytes, 1)),
                "bits_per_pixel": 8.0 * facts.file_bytes / (facts.width * facts.height)}
    return features | {f"format_{name.lower()}": float(facts.format == name) for name in FORMATS}


@FEATURE_GROUPS.register("geometry")
def geometry_features(facts: ImageFacts) -> dict[str, float]:
    """Image size and aspect ratio: two sources of a collection are often scanned or exported at different sizes."""
    return {"width": float(facts.width), "height": float(facts.height), "aspect": facts.width / facts.height,
            "log_pixels": math.log(facts.width * facts.height)}


@FEATURE_GROUPS.register("jpeg")
def jpeg_features(facts: ImageFacts) -> dict[str, float]:
    """Estimated JPEG quality and the quantisation tables' coarseness (0 for files that are not JPEG)."""
    luminance = facts.quantization.get(0)
    if not luminance:
        return {"jpeg_quality": 0.0, "luminance_table_mean": 0.0, "chroma_table_mean": 0.0, "jpeg_tables": 0.0}
    chroma = facts.quantization.get(1) or []
    return {"jpeg_quality": jpeg_quality(luminance), "luminance_table_mean": float(np.mean(luminance)),
            "chroma_table_mean": float(np.mean(chroma)) if chroma else 0.0,
            "jpeg_tables": float(len(facts.quantization))}


@FEATURE_GROUPS.register("histogram")
def histogram_features(facts: ImageFacts) -> dict[str, float]:
    """Exposure and contrast: mean, spread, percentiles and the share of near-black and near-white pixels."""
    pixels = facts.pixels
    percentiles = np.percentile(pixels, (1, 5, 25, 50, 75, 95, 99))
    return {"mean": float(pixels.mean()), "std": float(pixels.std()),
            **{f"p{q}": float(v) for q, v in zip((1, 5, 25, 50, 75, 95, 99), percentiles, strict=True)},
            "dark_share": float((pixels <= DARK_LEVEL).mean()), "bright_share": float((pixels >= BRIGHT_LEVEL).mean())}


def flat_lines(lines: np.ndarray) -> float:
    """Share of ``lines`` (rows from an edge inwards) that are flat before the first one that is not."""
    flat = lines.std(axis=1) < FLAT_LINE_STD
    return float(np.argmin(flat) if not flat.all() else len(flat)) / len(flat)


@FEATURE_GROUPS.register("border")
def border_features(facts: ImageFacts) -> dict[str, float]:
    """Brightness of the edge strips against the centre, and padding (flat rows or columns at an edge)."""
    pixels = facts.pixels
    side = pixels.shape[0]
    width = max(1, round(BORDER_FRACTION * side))
    strips = {"top": pixels[:width], "bottom": pixels[-width:], "left": pixels[:, :width],
              "right": pixels[:, -width:]}
    centre = pixels[side // 4: -(side // 4), side // 4: -(side // 4)].mean()
    half = side // 2
    edges = {"top": pixels[:half], "bottom": pixels[::-1][:half], "left": pixels.T[:half],
             "right": pixels.T[::-1][:half]}
    return {**{f"{name}_mean": float(strip.mean()) for name, strip in strips.items()},
            "border_minus_centre": float(np.mean([s.mean() for s in strips.values()]) - centre),
            **{f"{name}_flat": flat_lines(lines) for name, lines in edges.items()}}


@FEATURE_GROUPS.register("corners")
def corner_features(facts: ImageFacts) -> dict[str, float]:
    """Bright pixels and edges in each corner patch, where burnt-in side markers and text sit."""
    pixels = facts.pixels
    side = pixels.shape[0]
    patch = max(2, round(CORNER_FRACTION * side))
    gradient = np.hypot(*np.gradient(pixels))
    corners = {"top_left": (slice(0, patch), slice(0, patch)), "top_right": (slice(0, patch), slice(-patch, None)),
               "bottom_left": (slice(-patch, None), slice(0, patch)),
               "bottom_right": (slice(-patch, None), slice(-patch, None))}
    features: dict[str, float] = {}
    for name, where in corners.items():
        features[f"{name}_bright"] = float((pixels[where] >= BRIGHT_LEVEL).mean())
        features[f"{name}_edges"] = float((gradient[where] >= EDGE_LEVEL).mean())
    return features


@CLASSIFIERS.register("logistic")
def logistic_regression() -> ClassifierMixin:
    """Scaled features, L2-regularised logistic regression: what a linear read-out of the cues gives."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


@CLASSIFIERS.register("boosting")
def gradient_boosting() -> ClassifierMixin:
    """Gradient-boosted trees: thresholds and interactions a linear model misses (no scaling needed)."""
    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=0)


@dataclass
class FeatureTable:
    """Features, labels and patients of the images of one folder, and the sum of their grey images per class."""

    names: dict[str, list[str]] = field(default_factory=dict)
    """Feature names per group, in column order."""
    rows: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    image_sums: np.ndarray = field(default_factory=lambda: np.zeros((len(CLASS_NAMES), ANALYSIS_SIDE, ANALYSIS_SIDE)))
    border_crop: float = 0.0
    """Pixel features of what a model with this ``data.border_crop`` sees: the image cropped first."""

    def add(self, record: ImageRecord, grey: np.ndarray) -> None:
        """Add the image of ``record``, already decoded as ``grey`` (the audit decodes each file once)."""
        facts = image_facts(record.path, crop_border(grey, self.border_crop))
        row: list[float] = []
        for group in FEATURE_GROUPS.names():
            values = FEATURE_GROUPS.get(group)(facts)
            self.names.setdefault(group, list(values))
            row += list(values.values())
        self.rows.append(row)
        self.labels.append(record.label)
        self.patients.append(record.patient)
        self.image_sums[record.label] += facts.pixels

    def columns(self, group: str | None = None) -> np.ndarray:
        """The feature matrix, all groups or one."""
        matrix = np.asarray(self.rows, dtype=np.float64)
        if group is None:
            return matrix
        start = 0
        for name, features in self.names.items():
            if name == group:
                return matrix[:, start:start + len(features)]
            start += len(features)
        raise KeyError(group)

    def mean_images(self) -> np.ndarray:
        """The mean grey image of each class (``CLASS_NAMES`` order)."""
        counts = np.bincount(self.labels, minlength=len(CLASS_NAMES))
        return self.image_sums / np.maximum(counts, 1)[:, None, None]


def collect_features(records: Sequence[ImageRecord], progress: bool = False, desc: str = "shortcut features",
                     border_crop: float = 0.0) -> tuple[FeatureTable, list[dict[str, str]]]:
    """Decode each record and add it to a table; unreadable files are listed, not fatal."""
    table, unreadable = FeatureTable(border_crop=border_crop), []
    for record in tqdm(records, desc=desc, disable=not progress, unit="img"):
        try:
            grey = read_grey(record.path)
        except UnreadableImageError as error:
            unreadable.append({"file": str(record.path), "reason": error.reason})
            continue
        table.add(record, grey)
    return table, unreadable


def group_names(table: FeatureTable) -> list[str]:
    """Every feature group, then ``all`` of them together."""
    return [*table.names, "all"]


def cross_validated_auc(table: FeatureTable, group: str, classifier: str) -> float:
    """Mean ROC AUC over folds grouped by patient (stratified by class).

    Averaged per fold rather than pooled: a cue-free group then scores exactly 0.5, where pooling would
    compare one fold's constant guess with another's.
    """
    labels, patients = np.asarray(table.labels), np.asarray(table.patients)
    folds = min(FOLDS, *(len(set(patients[labels == c])) for c in range(len(CLASS_NAMES))))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    features = table.columns(None if group == "all" else group)
    aucs = []
    for fit, held_out in splitter.split(features, labels, groups=patients):
        model = CLASSIFIERS.get(classifier)().fit(features[fit], labels[fit])
        aucs.append(roc_auc_score(labels[held_out], model.predict_proba(features[held_out])[:, 1]))
    return float(np.mean(aucs))


def transfer_auc(train: FeatureTable, test: FeatureTable, group: str, classifier: str) -> float:
    """ROC AUC on ``test`` of a classifier fitted on all of ``train``."""
    selected = None if group == "all" else group
    model = CLASSIFIERS.get(classifier)().fit(train.columns(selected), train.labels)
    return float(roc_auc_score(test.labels, model.predict_proba(test.columns(selected))[:, 1]))


def single_feature_aucs(table: FeatureTable) -> list[dict[str, float | str]]:
    """ROC AUC of each feature alone, in its better direction (at least 0.5), strongest first."""
    matrix, labels, found = table.columns(), np.asarray(table.labels), []
    column = 0
    for group, names in table.names.items():
        for name in names:
            values = matrix[:, column]
            auc = float(roc_auc_score(labels, values)) if np.ptp(values) > 0 else 0.5
            found.append({"feature": name, "group": group, "auc": round(max(auc, 1.0 - auc), 4),
                          "higher_in": CLASS_NAMES[int(auc >= 0.5)] if auc != 0.5 else "-"})
            column += 1
    return sorted(found, key=lambda item: -float(item["auc"]))


@dataclass
class ShortcutReport:
    """ROC AUCs of the trivial cues, per folder (cross-validated), per external set (fitted on ``fitted_on``)."""

    warning_level: float
    feature_groups: dict[str, list[str]]
    folders: dict[str, dict] = field(default_factory=dict)
    """Per split folder: images, patients and ``auc[group][classifier]``, or ``skipped`` with the reason."""
    fitted_on: str = ""
    external: dict[str, dict] = field(default_factory=dict)
    single_features: list[dict] = field(default_factory=list)
    """The strongest single features of the folder the external sets were scored from."""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def too_small(table: FeatureTable) -> str | None:
    """Why a folder cannot be cross-validated, or ``None``."""
    labels, patients = np.asarray(table.labels, dtype=int), np.asarray(table.patients)
    fewest = min(len(set(patients[labels == c])) for c in range(len(CLASS_NAMES))) if len(labels) else 0
    return f"fewer than 2 patients in a class ({fewest})" if fewest < 2 else None


def score_folder(table: FeatureTable) -> dict:
    """Images, patients and the cross-validated AUC of each group and classifier for one folder."""
    summary: dict = {"images": len(table.labels), "patients": len(set(table.patients))}
    if reason := too_small(table):
        return summary | {"skipped": reason}
    return summary | {"auc": {group: {name: round(cross_validated_auc(table, group, name), 4)
                                      for name in CLASSIFIERS.names()} for group in group_names(table)}}


def warnings_for(where: str, aucs: dict[str, dict[str, float]], level: float) -> list[str]:
    """One line per feature group whose best classifier reaches ``level``."""
    return [f"{where}: {group} features predict the label with ROC AUC {max(by.values()):.3f} "
            f"(warning level {level:g})" for group, by in aucs.items() if max(by.values()) >= level]


def shortcut_report(folders: dict[str, FeatureTable], external: dict[str, FeatureTable] | None = None,
                    level: float = SHORTCUT_WARNING_AUC) -> ShortcutReport:
    """Score every folder by patient-grouped cross-validation and each external set from the training folder."""
    with threadpool_limits(1):  # tiny fits: threads cost more than they save (boosting 64 s -> 2.6 s on 2 cores)
        return score_tables(folders, external or {}, level)


def score_tables(folders: dict[str, FeatureTable], external: dict[str, FeatureTable], level: float) -> ShortcutReport:
    """:func:`shortcut_report`'s work, on the threads it allows."""
    fit_name = "train" if "train" in folders else next(iter(folders))
    fit_table = folders[fit_name]
    report = ShortcutReport(level, fit_table.names, fitted_on=fit_name)
    for name, table in folders.items():
        report.folders[name] = score_folder(table)
        report.warnings += warnings_for(f"{name or '(all)'} (cross-validated)", report.folders[name].get("auc", {}),
                                        level)
    if fit_table.labels and not too_small(fit_table):
        report.single_features = single_feature_aucs(fit_table)[:10]
    for name, table in external.items():
        report.external[name] = {"images": len(table.labels), "patients": len(set(table.patients))}
        if too_small(table) or too_small(fit_table):
            report.external[name]["skipped"] = too_small(table) or f"{fit_name}: {too_small(fit_table)}"
            continue
        aucs = {group: {classifier: round(transfer_auc(fit_table, table, group, classifier), 4)
                        for classifier in CLASSIFIERS.names()} for group in group_names(fit_table)}
        report.external[name]["auc"] = aucs
        report.warnings += warnings_for(f"{name} (fitted on {fit_name or '(all)'})", aucs, level)
    return report
