"""Site adaptation study: which threshold transfers to new patients, what label-free adaptation buys, and how
many labelled films a site needs before recalibrating beats the default.

Each model's logits are computed once (internal validation split, photometrically shifted views of it, the
external folder) and every comparison runs on those arrays with the project's own fitting code:
``choose_threshold`` and ``fit_local_calibration`` (what ``cxrdistill calibrate`` runs), ``estimate_prior_em``
and ``prior_log_ratios`` (what ``cxrdistill adapt`` runs). AdaBN, which changes the network, runs through
``adapt_checkpoint`` itself. Labels of the external folder are used only to score.

    python benchmarks/site_adaptation.py --model student=RUN/best.safetensors --data ROOT --external HALF_A
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrdistill.config import DataConfig, EvaluationConfig
from cxrdistill.data.dataset import XRayDataset, default_num_workers
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.data.splits import split_patients
from cxrdistill.data.transforms import AugmentSettings, XRayTransform
from cxrdistill.evaluation.adaptation import adapt_checkpoint, estimate_prior_em, model_prior
from cxrdistill.evaluation.evaluate import load_for_evaluation, predict_records, records_for
from cxrdistill.evaluation.metrics import binary_metrics
from cxrdistill.evaluation.operating_point import DEFAULT_THRESHOLD, choose_threshold, fit_local_calibration
from cxrdistill.evaluation.predict import Predictions, predict
from cxrdistill.files import atomic_write_json, atomic_write_text
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.runtime.served import prior_log_ratios

SCANNER_SHIFT = AugmentSettings(max_rotation=0.0, max_translate=0.0, scale_range=(1.0, 1.0), brightness=0.4,
                                contrast=0.4, gamma_range=(0.6, 1.6), blur_probability=0.5, noise_std=0.03)
"""Intensity, contrast, gamma, blur and noise beyond the training augmentation: films from other scanners."""
SHIFTED_VIEWS = 3
LABEL_COUNTS = (10, 20, 50, 100, 200)
REPORTED = ("accuracy", "sensitivity", "specificity")


def softmax_positive(logits: np.ndarray) -> np.ndarray:
    return Predictions(np.zeros(len(logits), dtype=int), logits, []).prob_positive


def hardest_half(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Indices of the half of each class the model finds hardest (highest cross-entropy)."""
    prob = softmax_positive(logits)
    loss = -np.log(np.where(labels == 1, prob, 1.0 - prob) + 1e-12)
    keep = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        keep += list(members[np.argsort(-loss[members])][: max(1, len(members) // 2)])
    return np.array(sorted(keep))


@dataclasses.dataclass
class ModelArrays:
    name: str
    checkpoint: Path
    metadata: dict[str, Any]
    val: Predictions
    shifted_val: Predictions
    external: Predictions
    external_records: list


def compute_arrays(name: str, checkpoint: Path, data: Path, external: Path, cache_dir: Path,
                   work: Path) -> ModelArrays:
    """Logits of the val split, of shifted views of it and of the external folder (cached in ``work``)."""
    model, metadata, data_config = load_for_evaluation(checkpoint)
    data_config: DataConfig = dataclasses.replace(data_config, cache_dir=str(cache_dir), num_workers=0)
    val_records, _ = records_for(data, "val", data_config)
    external_records, _ = records_for(external, "test", data_config)
    cached = work / f"{name}-logits.npz"
    if cached.is_file():
        arrays = np.load(cached)
        kept = set(arrays["external_paths"].tolist())
        unpack = {k: Predictions(arrays[f"{k}_labels"], arrays[f"{k}_logits"], []) for k in
                  ("val", "shifted_val", "external")}
        return ModelArrays(name, checkpoint, metadata, unpack["val"], unpack["shifted_val"], unpack["external"],
                           [r for r in external_records if str(r.path) in kept])
    val_records, val = predict_records(model, metadata, data_config, val_records, progress=False)
    external_records, outside = predict_records(model, metadata, data_config, external_records, progress=False)
    views = []
    for view in range(SHIFTED_VIEWS):
        torch.manual_seed(view)
        shifted_view = XRayTransform(SCANNER_SHIFT, data_config.intensity_normalization)
        dataset = XRayDataset(val_records, Preprocessing.of(metadata), shifted_view, progress=False)
        loader = DataLoader(dataset, batch_size=64, num_workers=default_num_workers(data_config.num_workers))
        views.append(predict(model, loader, resolve_precision(torch.device("cpu"), "auto")))
    shifted = Predictions(np.concatenate([v.labels for v in views]), np.concatenate([v.logits for v in views]), [])
    np.savez(cached, val_labels=val.labels, val_logits=val.logits, shifted_val_labels=shifted.labels,
             shifted_val_logits=shifted.logits, external_labels=outside.labels, external_logits=outside.logits,
             external_paths=np.array([str(r.path) for r in external_records]))
    return ModelArrays(name, checkpoint, metadata, val, shifted, outside, external_records)


def scores(labels: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    metrics = binary_metrics(labels, prob, threshold)
    return {m: round(float(metrics[m]), 4) for m in REPORTED}


def policy_thresholds(arrays: ModelArrays) -> dict[str, float]:
    """Every candidate policy's threshold, each chosen without the external folder's labels."""
    val, shifted = arrays.val, arrays.shifted_val
    hard = hardest_half(val.labels, val.logits)
    return {
        "youden on val (stored by training)": choose_threshold(val.labels, val.prob_positive, "youden"),
        "0.5": DEFAULT_THRESHOLD,
        "youden on hardest half of val": choose_threshold(val.labels[hard], val.prob_positive[hard], "youden"),
        "youden on scanner-shifted val": choose_threshold(shifted.labels, shifted.prob_positive, "youden"),
        "min_sensitivity 0.95 on val": choose_threshold(val.labels, val.prob_positive, "min_sensitivity", 0.95),
    }


def compare_policies(arrays: ModelArrays) -> list[dict[str, Any]]:
    outside = arrays.external
    return [{"model": arrays.name, "policy": policy, "threshold": round(threshold, 4),
             **scores(outside.labels, outside.prob_positive, threshold)}
            for policy, threshold in policy_thresholds(arrays).items()]


def prior_corrected(logits: np.ndarray, assumed: float, site: float) -> np.ndarray:
    return softmax_positive(logits + prior_log_ratios(assumed, site))


def adaptation_rows(arrays: ModelArrays, seeds: int, work: Path) -> list[dict[str, Any]]:
    """Prior shift (EM) on all of the external folder, and adapt-on-one-half / score-the-other by patient."""
    outside, records = arrays.external, arrays.external_records
    assumed, _ = model_prior(arrays.metadata)
    has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                        for m in load_for_evaluation(arrays.checkpoint)[0].modules())
    rows = []
    parts: list[tuple[str, np.ndarray, np.ndarray]] = [("all (adapt and score the same images)",
                                                        np.arange(len(records)), np.arange(len(records)))]
    for seed in range(seeds):
        split = split_patients(records, {"adapt": 0.5}, seed)
        index = {r.path: i for i, r in enumerate(records)}
        parts.append((f"patient halves, seed {seed}", np.array([index[r.path] for r in split["adapt"]]),
                      np.array([index[r.path] for r in split["train"]])))
    for part, adapt_on, score_on in parts:
        estimate = estimate_prior_em(outside.prob_positive[adapt_on], assumed)
        labels = outside.labels[score_on]
        row = {"model": arrays.name, "part": part, "adapt images": len(adapt_on), "scored images": len(score_on),
               "true share": round(float(outside.labels[adapt_on].mean()), 3),
               "estimated share": round(estimate.site_prior, 3),
               **{f"{m} at 0.5": v for m, v in scores(labels, outside.prob_positive[score_on], 0.5).items()},
               **{f"{m} prior-corrected": v for m, v in scores(
                   labels, prior_corrected(outside.logits[score_on], assumed, estimate.site_prior), 0.5).items()}}
        if has_batchnorm:
            row.update(adabn_scores(arrays, records, adapt_on, score_on, work / f"{arrays.name}-adabn.safetensors"))
        rows.append(row)
    return rows


def adabn_scores(arrays: ModelArrays, records: list, adapt_on: np.ndarray, score_on: np.ndarray,
                 out: Path) -> dict[str, float]:
    """``adapt_checkpoint`` (AdaBN then the prior) on the adapt part's files, scored on the other part."""
    files = [records[i].path for i in adapt_on]
    root = Path(files[0]).parents[1]
    adapted = adapt_checkpoint(arrays.checkpoint, files, out, root=root)
    model, metadata, data_config = load_for_evaluation(adapted.checkpoint)
    kept, predictions = predict_records(model, metadata, data_config, [records[i] for i in score_on],
                                        progress=False)
    shift = adapted.prior_shift
    assert shift is not None
    raw_bn = predictions.logits - prior_log_ratios(shift["model_prior"], shift["site_prior"])
    return {**{f"{m} AdaBN": v for m, v in scores(predictions.labels, softmax_positive(raw_bn), 0.5).items()},
            **{f"{m} AdaBN + prior": v for m, v in scores(predictions.labels, predictions.prob_positive,
                                                           0.5).items()},
            "estimated share after AdaBN": round(shift["site_prior"], 3)}


def draw_by_patient(records: list, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of whole patients drawn at random until ``count`` images, with both classes present."""
    by_patient: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_patient.setdefault(record.patient, []).append(i)
    patients = list(by_patient)
    while True:
        chosen: list[int] = []
        for patient in rng.permutation(patients):
            if len(chosen) >= count:
                break
            chosen += by_patient[patient]
        labels = {records[i].label for i in chosen}
        if labels == {0, 1}:
            return np.array(sorted(chosen))


def learning_curve(arrays: ModelArrays, draws: int, seed: int = 0) -> list[dict[str, Any]]:
    """Recalibrate (temperature + youden threshold) on n labelled films drawn by patient; score the rest."""
    outside, records = arrays.external, arrays.external_records
    settings = EvaluationConfig(threshold_policy="youden")
    rng = np.random.default_rng(seed)
    rows = []
    for count in LABEL_COUNTS:
        gains, accuracies, defaults = [], [], []
        for _ in range(draws):
            fit_on = draw_by_patient(records, count, rng)
            rest = np.setdiff1d(np.arange(len(records)), fit_on)
            fitted = fit_local_calibration(outside.logits[fit_on], outside.labels[fit_on], settings)
            prob = softmax_positive(outside.logits[rest] / fitted.temperature)
            calibrated = binary_metrics(outside.labels[rest], prob, fitted.threshold)["accuracy"]
            default = binary_metrics(outside.labels[rest], outside.prob_positive[rest], DEFAULT_THRESHOLD)["accuracy"]
            accuracies.append(calibrated)
            defaults.append(default)
            gains.append(calibrated - default)
        gains_array = np.array(gains)
        rows.append({"model": arrays.name, "labelled images": count, "draws": draws,
                     "accuracy recalibrated (mean)": round(float(np.mean(accuracies)), 4),
                     "accuracy at 0.5 on the same rest (mean)": round(float(np.mean(defaults)), 4),
                     "gain (mean)": round(float(gains_array.mean()), 4),
                     "gain 5th percentile": round(float(np.percentile(gains_array, 5)), 4),
                     "gain 95th percentile": round(float(np.percentile(gains_array, 95)), 4),
                     "share of draws better than 0.5": round(float(np.mean(gains_array > 0)), 3)})
    return rows


def plot_learning_curve(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        counts = [r["labelled images"] for r in mine]
        axis.plot(counts, [r["gain (mean)"] * 100 for r in mine], marker="o", label=model)
        axis.fill_between(counts, [r["gain 5th percentile"] * 100 for r in mine],
                          [r["gain 95th percentile"] * 100 for r in mine], alpha=0.15)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xticks(LABEL_COUNTS, [str(c) for c in LABEL_COUNTS])
    axis.set_xlabel("labelled films used to recalibrate (drawn by patient)")
    axis.set_ylabel("accuracy gain over 0.5 on the rest (points)")
    axis.set_title("Recalibration vs the default threshold (mean, 5-95 % of draws)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    options.add_argument("--data", type=Path, required=True, help="the training root (for its val split)")
    options.add_argument("--external", type=Path, required=True, help="labelled external folder (scored only)")
    options.add_argument("--work", type=Path, required=True, help="logit cache and adapted checkpoints")
    options.add_argument("--out", type=Path, default=Path("benchmarks/results/site-adaptation"))
    options.add_argument("--seeds", type=int, default=5, help="patient-wise halves for adaptation")
    options.add_argument("--draws", type=int, default=50, help="draws per label count")
    args = options.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    policies, adaptation, curve = [], [], []
    for spec in args.model:
        name, _, checkpoint = spec.partition("=")
        arrays = compute_arrays(name, Path(checkpoint), args.data, args.external, args.work / "cache", args.work)
        policies += compare_policies(arrays)
        adaptation += adaptation_rows(arrays, args.seeds, args.work)
        curve += learning_curve(arrays, args.draws)
    for name, rows in (("policies", policies), ("adaptation", adaptation), ("learning_curve", curve)):
        atomic_write_text(args.out / f"{name}.md", markdown(rows))
    atomic_write_json(args.out / "summary.json", {"models": [s.partition("=")[0] for s in args.model],
                                                  "policies": policies, "adaptation": adaptation,
                                                  "learning_curve": curve})
    plot_learning_curve(curve, args.out / "learning_curve.png")


if __name__ == "__main__":
    main()
