"""A model card (``MODEL_CARD.md``) written beside an exported model, so the file explains itself to its users.

It says what the model is and was trained on, what it is for and not for, how well it did with 95 %
intervals on the internal test split and on each external set (from the run's ``evaluation.json``,
which training writes), at which threshold, and its known limits. Everything comes from the
checkpoint and its run folder: nothing is typed in by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrdistill.data.shortcut_outputs import SHORTCUT_AUDIT_FILE
from cxrdistill.evaluation.evaluate import RUN_EVALUATION_FILE
from cxrdistill.evaluation.operating_point import threshold_in_use
from cxrdistill.files import atomic_write_text
from cxrdistill.runtime.checkpoint import load_checkpoint

MODEL_CARD = "MODEL_CARD.md"
CARD_METRICS = ("accuracy", "sensitivity", "specificity", "roc_auc")
LIMITATIONS = (
    "Research software, **not a medical device**: its outputs are not diagnoses and must not guide care.",
    "Trained on paediatric chest X-rays (children aged 1-5) from a single centre (Guangzhou Women and Children's "
    "Medical Center, Kermany et al. 2018); adults, other hospitals, scanners and protocols are out of scope "
    "until checked on local labelled images (`cxrdistill calibrate-and-evaluate`).",
    "Two classes only (NORMAL, PNEUMONIA): other findings are not recognised and will be forced into one of them.",
    "A later cohort of the same centre already scores lower than a patient-wise split of the training folder, "
    "specificity above all; thresholds chosen on the internal validation split may not transfer.",
)


def evaluation_section(checkpoint: Path) -> list[str]:
    """Metrics with intervals per evaluation set and threshold, from the run's ``evaluation.json``."""
    path = checkpoint.parent / RUN_EVALUATION_FILE
    if not path.is_file():
        return [f"No `{RUN_EVALUATION_FILE}` beside the checkpoint: this model was not evaluated after training. "
                f"Run `cxrdistill evaluate {checkpoint} --data DIR` before relying on it."]
    evaluation = json.loads(path.read_text())
    lines = []
    if Path(evaluation["checkpoint"]).name != checkpoint.name:
        lines += [f"These figures are of `{Path(evaluation['checkpoint']).name}`, the checkpoint its run handed on, "
                  f"not of the exported `{checkpoint.name}`.", ""]
    lines += ["| set | images (patients) | threshold | " + " | ".join(CARD_METRICS) + " |",
              "|---|---|---|" + "---|" * len(CARD_METRICS)]
    for name, entry in evaluation["sets"].items():
        for result in entry["results"]:
            cells = []
            for metric in CARD_METRICS:
                estimate = result["metrics"][metric]
                cells.append(f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]")
            lines.append(f"| {name} ({entry['data']}) | {entry['count']} ({entry['patients']}) | {result['rule']} "
                         f"({result['threshold']:.3g}) | " + " | ".join(cells) + " |")
    lines += ["", "Values with 95 % patient-bootstrap intervals. `val` chose the operating threshold, so its figures "
                  "at that threshold are optimistic; `test` is a patient-wise held-out split of the training data; "
                  "other sets are external (never trained on)."]
    return lines


def adaptation_lines(metadata: dict) -> list[str]:
    """What ``cxrdistill adapt`` changed, from the sidecar's ``adaptation`` and ``prior_shift`` records."""
    record, shift = metadata.get("adaptation"), metadata.get("prior_shift")
    if not record:
        return []
    lines = [f"* Adapted to a site on {record['images']} unlabelled images (file list SHA-256 "
             f"{record['files_sha256'][:12]}...): BatchNorm {record['batchnorm']}."]
    if shift:
        lines.append(f"* Probabilities moved from the model's share of pneumonia ({shift['model_prior']:.3g}, "
                     f"{shift['model_prior_source']}) to the site's estimated share ({shift['site_prior']:.3g}, "
                     f"{shift['estimator']}).")
    return lines


def shortcut_lines(checkpoint: Path) -> list[str]:
    """One line on the shortcut audit of the training data, when its JSON lies in the checkpoint's run folder."""
    path = checkpoint.parent / SHORTCUT_AUDIT_FILE
    if not path.is_file():
        return []
    audit = json.loads(path.read_text())
    scored = {name: entry["auc"] for name, entry in audit["folders"].items() if "auc" in entry}
    if not scored:
        return []
    fitted = audit["fitted_on"] if audit["fitted_on"] in scored else next(iter(scored))
    best = {group: max(by.values()) for group, by in scored[fitted].items() if group != "all"}
    strongest = max(best, key=best.get)
    external = "".join(f"; {max(entry['auc']['all'].values()):.3f} on {name}"
                       for name, entry in audit["external"].items() if "auc" in entry)
    verdict = (f"at or above the warning level {audit['warning_level']:g}: the labels can be read off how the "
               f"films were made and stored, so the model may rely on such cues"
               if max(scored[fitted]["all"].values()) >= audit["warning_level"]
               else f"below the warning level {audit['warning_level']:g}")
    return [f"* Shortcut audit of `{audit['root']}` (`cxrdistill data audit`): trivial image statistics predict "
            f"the label with ROC AUC {max(scored[fitted]['all'].values()):.3f} (cross-validated by patient on "
            f"{fitted or 'the folder'}; strongest group {strongest}, {best[strongest]:.3f}){external} — {verdict}."]


def training_summary(config: dict) -> str:
    train, distill = config.get("train", {}), config.get("distill", {})
    how = (f"distilled from the teacher `{distill['teacher']}` at T = {distill.get('temperature')}"
           if distill.get("teacher") else "supervised on the labels only")
    return (f"{how}; init {config.get('model', {}).get('init')}, {train.get('epochs')} epochs, lr {train.get('lr')}, "
            f"seed {train.get('seed')}.")


def write_model_card(checkpoint: str | Path, exported: str | Path) -> Path:
    """Write ``MODEL_CARD.md`` beside ``exported`` describing the model exported from ``checkpoint``."""
    checkpoint, exported = Path(checkpoint), Path(exported)
    metadata = load_checkpoint(checkpoint)["metadata"]
    config = metadata.get("config", {})
    data = config.get("data", {})
    in_use = threshold_in_use(metadata)
    threshold = f"{in_use.threshold:.4g}, {in_use.rule}: {in_use.reason}"
    temperature = (metadata.get("calibration") or {}).get("temperature")
    lines = [
        f"# Model card: {exported.name}",
        "",
        "## Model",
        "",
        f"* Architecture: {metadata['architecture']} at {metadata['input_size']} px "
        f"(front-end: {metadata.get('frontend', 'none')}), exported from `{checkpoint}`.",
        f"* Training: {training_summary(config)}",
        f"* Input: one grey channel replicated to three, {metadata['normalization']}; intensity normalisation "
        f"{metadata.get('intensity_normalization', 'none')}; border crop {metadata.get('border_crop', 0.0):g} of "
        f"each side before the resize. Output: logits for {metadata['class_names']} "
        f"(positive class {metadata['positive_class']}).",
        f"* Decision threshold on P({metadata['positive_class']}): {threshold}"
        + (f"; probabilities calibrated with temperature {temperature:.4g}." if temperature else "."),
        *adaptation_lines(metadata),
        f"* Versions: {metadata.get('versions')}; created {metadata.get('created')}.",
        "",
        "## Data",
        "",
        f"* Trained on `{data.get('root')}` (split by patient, seed {data.get('split_seed')}; at most "
        f"{data.get('max_per_class') or 'all'} training images per class).",
        "* Source data: Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
        "Images for Classification. Mendeley Data, v2, 2018. doi:10.17632/rscbjbr9sj.2 (CC BY 4.0).",
        *shortcut_lines(checkpoint),
        "",
        "## Intended use",
        "",
        f"{metadata.get('intended_use', '')} Meant for studying knowledge distillation and small models on weak "
        "hardware, not for screening or diagnosing patients.",
        "",
        "## Metrics",
        "",
        *evaluation_section(checkpoint),
        "",
        "## Limitations",
        "",
        *(f"* {item}" for item in LIMITATIONS),
        "",
    ]
    return atomic_write_text(exported.parent / MODEL_CARD, "\n".join(lines))
