"""Running a model over labelled images to fit its operating point and temperature: after training, and at
a new site (``cxrdistill calibrate``, ``calibrate-and-evaluate``). The policies and the fitting itself are
:mod:`cxrdistill.evaluation.operating_point`'s.

* After training, :func:`choose_on_val` picks the threshold on the **validation** split with the
  run's ``evaluation.threshold_policy`` and writes it into the checkpoint's metadata.
* At a new site (``cxrdistill calibrate``), :func:`calibrate_checkpoint` refits the temperature and the
  threshold on the site's own labelled sample and writes a **new** checkpoint that records both, with a
  description and the size of the data they were fitted on.
* To report on a labelled external folder honestly (``cxrdistill calibrate-and-evaluate``),
  :func:`calibrate_and_evaluate` splits it by patient: one part calibrates, the other is reported. This
  is the way to use an external set such as Kermany's half A: numbers measured on the images that
  chose the threshold would flatter the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrdistill.config import DataConfig, EvaluationConfig, config_from_dict
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord
from cxrdistill.data.splits import split_patients
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.evaluate import (
    EvaluationReport,
    image_set,
    load_for_evaluation,
    predict_records,
    records_for,
    report_evaluation,
)
from cxrdistill.evaluation.operating_point import fit_local_calibration, nll_at_temperature, store_operating_point
from cxrdistill.evaluation.predict import Predictions
from cxrdistill.files import atomic_write_json
from cxrdistill.runtime.checkpoint import check_class_names, checkpoint_files, model_from_checkpoint


@dataclass(frozen=True)
class CalibrationResult:
    checkpoint: Path
    temperature: float
    operating_point: dict[str, Any]
    calibration: dict[str, Any]


def choose_on_val(
    checkpoint: str | Path, root: str | Path, settings: EvaluationConfig, device: str = "auto", progress: bool = False,
    local_data: DataConfig | None = None,
) -> dict[str, Any]:
    """Choose the threshold on the val split of ``root`` and write it into ``checkpoint`` (in place, atomically).

    ``local_data``: a run's own data settings right after training (default: the checkpoint's, with this
    machine's cache; see :func:`load_for_evaluation`)."""
    model, metadata, data_config = load_for_evaluation(checkpoint, local_data=local_data)
    records, description = records_for(Path(root), "val", data_config)
    _, predictions = predict_records(model, metadata, data_config, records, device, progress=progress)
    return store_operating_point(checkpoint, predictions, settings, "val", description)


def calibrate_checkpoint(
    checkpoint: str | Path, data: str | Path, out: str | Path, split: str = "val", device: str = "auto",
    progress: bool = False, cache_dir: str | Path | None = None, **policy: Any,
) -> CalibrationResult:
    """Refit temperature and threshold on a labelled folder; write the result as a new checkpoint ``out``.

    A Kermany root calibrates on its ``val`` split by default, never on the ``test`` split reports are made on;
    the new checkpoint records which images calibrated it, and ``evaluate`` refuses to report on those.
    ``policy`` overrides the checkpoint's ``evaluation`` settings (``threshold_policy``, ``min_sensitivity``,
    ``fixed_threshold``); ``None`` values keep them.
    """
    data_config = load_for_evaluation(checkpoint, cache_dir)[2]
    records, description = records_for(Path(data), split, data_config)
    return calibrate_on_records(checkpoint, records, description, out, device, progress, folder=data,
                                data_config=data_config, **policy)


def calibrate_on_records(
    checkpoint: str | Path, records: list[ImageRecord], description: str, out: str | Path, device: str = "auto",
    progress: bool = False, folder: str | Path = "", *, data_config: DataConfig, **policy: Any,
) -> CalibrationResult:
    """Fit the temperature on the network's raw logits, then the threshold on the recalibrated probabilities.

    ``folder`` (the data folder the records come from) names the calibration images in the new sidecar;
    ``data_config`` is how to read them (:func:`load_for_evaluation`'s, with this machine's cache)."""
    checkpoint, out = Path(checkpoint), checkpoint_files(out).weights  # NAME.pt is written as NAME.safetensors
    if out.resolve() == checkpoint_files(checkpoint).weights.resolve():
        raise InvalidArgumentError(f"calibrate writes a new checkpoint; choose an --out other than {checkpoint}")
    network, metadata = model_from_checkpoint(checkpoint)  # raw logits: any earlier temperature is refitted
    check_class_names(metadata, str(checkpoint))
    config = config_from_dict(metadata["config"])
    settings = dataclasses.replace(config.evaluation, **{k: v for k, v in policy.items() if v is not None})
    records, raw = predict_records(network, metadata, data_config, records, device, progress=progress)
    temperature = fit_local_calibration(raw.logits, raw.labels, settings).temperature
    calibration = {
        "temperature": temperature, "data": description, "count": len(records),
        "patients": len({r.patient for r in records}), "calibrated_from": str(checkpoint),
        "nll_before": nll_at_temperature(raw.logits, raw.labels, 1.0),
        "nll_after": nll_at_temperature(raw.logits, raw.labels, temperature),
        "images": image_set(raw.keys, folder),
    }
    calibrated = Predictions(raw.labels, raw.logits / temperature, raw.keys)
    operating_point = store_operating_point(checkpoint, calibrated, settings, "local calibration data", description,
                                            {"calibration": calibration}, out)
    return CalibrationResult(out, temperature, operating_point, calibration)


def calibrate_and_evaluate(
    checkpoint: str | Path, data: str | Path, out_dir: str | Path, calibration_fraction: float = 0.5, seed: int = 0,
    split: str = "val", n_bootstrap: int = 1000, device: str = "auto", progress: bool = False,
    cache_dir: str | Path | None = None, **policy: Any,
) -> tuple[CalibrationResult, EvaluationReport]:
    """Split a labelled folder by patient, calibrate on one part, report on the other.

    Writes ``out_dir/split.json`` (which file went where), the checkpoint ``out_dir/calibrated.safetensors``
    (+ ``.json``) and the evaluation of the calibrated checkpoint on the held-out part in ``out_dir/evaluation/``.
    """
    out_dir = Path(out_dir)
    if not 0.0 < calibration_fraction < 1.0:
        raise InvalidArgumentError(f"calibration_fraction must be between 0 and 1, got {calibration_fraction}")
    data_config = load_for_evaluation(checkpoint, cache_dir)[2]
    records, description = records_for(Path(data), split, data_config)
    parts = split_patients(records, {"calibration": calibration_fraction}, seed)
    calibration_part, held_out = parts["calibration"], parts["train"]
    for name, part in (("calibration", calibration_part), ("held-out", held_out)):
        if {r.label for r in part} != set(range(len(CLASS_NAMES))):
            raise InvalidArgumentError(
                f"the {name} part of {description} lacks a class ({len(part)} images); use a larger folder or "
                f"another --calibration-fraction")
    atomic_write_json(out_dir / "split.json", {
        "data": description, "seed": seed, "calibration_fraction": calibration_fraction,
        "calibration": [str(r.path) for r in calibration_part], "held_out": [str(r.path) for r in held_out],
    })
    tag = f"patient-wise split, seed {seed}"
    result = calibrate_on_records(checkpoint, calibration_part, f"{description} (calibration part, {tag})",
                                  out_dir / "calibrated.safetensors", device, progress, folder=data,
                                  data_config=data_config, **policy)
    model, metadata, data_config = load_for_evaluation(result.checkpoint, cache_dir)
    held_out, predictions = predict_records(model, metadata, data_config, held_out, device, progress=progress)
    report = report_evaluation(result.checkpoint, held_out, predictions, metadata,
                               f"{description} (held-out part, {tag})", out_dir / "evaluation", n_bootstrap)
    return result, report
