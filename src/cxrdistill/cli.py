"""The ``cxrdistill`` command line: a thin layer over the Python API (each command calls one function)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cxrdistill.config import ExperimentConfig, load_config
from cxrdistill.errors import CxrDistillError

app = typer.Typer(help="Pneumonia detection on chest X-rays with knowledge distillation.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect and make data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# Logs and CI are not terminals: give tables room instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ConfigOption = Annotated[str | None, typer.Option(
    "--config", "-c", help="Preset name (cpu/teacher, demo/student, ...) or a YAML file of your own.")]
Overrides = Annotated[list[str] | None, typer.Argument(help="Overrides such as train.epochs=3 data.root=DIR.")]
ExternalOption = Annotated[list[Path] | None, typer.Option(
    "--external", help="External labelled folder to evaluate every run on (repeatable); sets data.external.")]
PolicyOption = Annotated[str | None, typer.Option(
    help="Threshold policy: youden, min_sensitivity or fixed (default: the checkpoint's evaluation setting).")]
MinSensitivityOption = Annotated[float | None, typer.Option(help="Target for --policy min_sensitivity.")]
FixedThresholdOption = Annotated[float | None, typer.Option(help="Threshold for --policy fixed.")]
OperatingPointOption = Annotated[str, typer.Option(
    "--operating-point", help="Threshold without --threshold: 'default' (one fitted at the site, else 0.5), "
    "'stored' (the stored one, even if chosen on the internal validation split) or '0.5'.")]
CacheDirOption = Annotated[Path | None, typer.Option(
    help="Cache folder for splits and decoded images (default: this user's, e.g. $XDG_CACHE_HOME/cxrdistill).")]
SyntheticOption = Annotated[bool, typer.Option(
    "--synthetic", help="Train on made-up SYNTHETIC images (data.synthetic=true), not X-rays: a smoke test.")]


def with_synthetic(overrides: list[str] | None, synthetic: bool) -> list[str]:
    """The command line's overrides, plus ``data.synthetic=true`` when ``--synthetic`` asked for made-up data."""
    return [*(overrides or []), *(["data.synthetic=true"] if synthetic else [])]


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The user's errors (:class:`CxrDistillError`) print one clear line and exit with status 2 (or the
    error's own ``exit_status``: 130 for an interrupted training run).

    Anything else — a plain ``KeyError`` or ``ValueError`` included — is a bug and keeps its traceback.
    """

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CxrDistillError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)  # one line, however long
            raise typer.Exit(getattr(error, "exit_status", 2)) from None

    return wrapper


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    from cxrdistill.evaluation.tables import markdown_cell  # metric estimates as "value [low, high]"

    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else markdown_cell(v) for v in row.values()))
    console.print(table)


@app.command()
@friendly_errors
def train(
    config: ConfigOption = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last.state.pt.")] = False,
    synthetic: SyntheticOption = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a model (or distil, when the config names distill.teacher)."""
    from cxrdistill.experiments.run import run_experiment

    result = run_experiment(load_config(config, with_synthetic(overrides, synthetic)), resume=resume,
                            progress=not quiet)
    console.print(f"best checkpoint: {result.best_checkpoint} (epoch {result.state.best_epoch}); "
                  f"handed on (train.keep={result.keep}): {result.final_checkpoint}")


@app.command()
@friendly_errors
def distill(
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint (e.g. runs/teacher/best.safetensors).")],
    config: ConfigOption = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last.state.pt.")] = False,
    synthetic: SyntheticOption = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train the student with knowledge distillation from TEACHER."""
    from cxrdistill.experiments.run import run_experiment

    experiment = load_config(config, [*with_synthetic(overrides, synthetic), f"distill.teacher={teacher}"])
    result = run_experiment(experiment, resume=resume, progress=not quiet)
    console.print(f"best checkpoint: {result.best_checkpoint} (epoch {result.state.best_epoch}); "
                  f"handed on (train.keep={result.keep}): {result.final_checkpoint}")


@app.command("soft-targets")
@friendly_errors
def soft_targets(
    teacher: Annotated[Path, typer.Argument(help="Teacher checkpoint (.safetensors).")],
    data: Annotated[Path, typer.Argument(help="Kermany-layout root: every image under it is scored.")],
    out: Annotated[Path, typer.Option(help="The JSON file to write.")] = Path("soft-targets.json"),
    about: Annotated[str, typer.Option(help="What the teacher was trained on, stored in the file.")] = "",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Write the teacher's logits for every image under DATA: a student distils from the file
    (``distill.teacher=FILE.json``) without the teacher."""
    from cxrdistill.distillation.soft_targets import write_soft_targets

    table = write_soft_targets(teacher, data, out, about, progress=not quiet)
    console.print(f"wrote {out}: logits of {len(table.entries)} images from {table.teacher['architecture']} at "
                  f"{table.preprocessing.input_size} px ({out.stat().st_size / 1e3:.0f} kB)")


def metric_rows(report: Any) -> list[dict[str, Any]]:
    """One row per metric, one column per threshold (0.5 and the stored operating point) of an EvaluationReport."""
    return [{"metric": name, **{f"at {r.rule} ({r.threshold:.4g})": r.metrics[name] for r in report.evaluation.results}}
            for name in report.metrics]


@app.command()
@friendly_errors
def evaluate(
    checkpoint: Path,
    data: Annotated[Path, typer.Option(help="Kermany-layout root, or a bare NORMAL/ + PNEUMONIA/ folder.")],
    split: Annotated[str, typer.Option(help="test or val (ignored for a bare folder).")] = "test",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: beside the checkpoint).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    device: str = "auto",
    mask: Annotated[str | None, typer.Option(
        help="Hide part of every input: lungs (the central lung field) or outside-lungs (all but it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    allow_calibration_images: Annotated[bool, typer.Option(
        help="Report even on the images that calibrated the checkpoint (optimistic; the report says so).")] = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Metrics with 95% CIs, per-image CSV and ROC / confusion / reliability plots."""
    from cxrdistill.evaluation.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, data, split, out, bootstrap, device, progress=not as_json, mask=mask,
                                 allow_calibration_images=allow_calibration_images, cache_dir=cache_dir)
    if report.calibration_images:
        errors.print("[bold yellow]warning:[/] reported on the images that calibrated this checkpoint: its "
                     "temperature and threshold were fitted on them, so these figures are optimistic", highlight=False)
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
        return
    print_rows(metric_rows(report), f"{checkpoint} on {report.data} ({report.count} images, "
                                    f"{report.evaluation.patients} patients; value [95% patient-bootstrap interval])")
    for result in report.evaluation.results:
        console.print(f"confusion at {result.rule} (rows true NORMAL, PNEUMONIA): {result.confusion}")
    console.print(f"predictions, metrics and plots in {report.out_dir}")


@app.command()
@friendly_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    size: Annotated[int | None, typer.Option(help="Input size for FLOPs (default: each model's own).")] = None,
) -> None:
    """Parameters, depth and FLOPs of each registered architecture, beside the paper's Table I."""
    from cxrdistill.config import ModelConfig
    from cxrdistill.models import MODELS
    from cxrdistill.models.summary import summarize
    from cxrdistill.paper import beside_table_1

    summaries = [beside_table_1(summarize(ModelConfig(name=name), size).as_dict()) for name in MODELS.names()]
    if as_json:
        print(json.dumps(summaries, indent=1))
        return
    rows = [{"model": s["name"], "input": s["input_size"], "params M": s["params_m"],
             "paper params M": s["paper_params_m"], "weight layers": s["weight_layers"],
             "paper depth": s["paper_depth"], "GFLOPs": s["gflops"], "GMACs": s["gmacs"],
             "paper comp. (M)": s["paper_computation_m"]} for s in summaries]
    rows = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]  # not in the paper's table
    print_rows(rows, "Models (FLOPs from torch.utils.flop_counter, 2 per multiply-add; paper's column ≈ MACs)")


@data_app.command("audit")
@friendly_errors
def data_audit(
    root: Path,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="External labelled folder to score the shortcut model on (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the shortcut audit's JSON, Markdown table and figures.")] = None,
    shortcuts: Annotated[bool, typer.Option(help="Audit trivial image cues for the label (shortcuts).")] = True,
    border_crop: Annotated[float, typer.Option(
        help="Measure the pixel cues after this border crop (a model's data.border_crop).")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Counts, unreadable files, duplicates, patient overlap, image sizes and shortcut cues of a data folder."""
    from cxrdistill.data.audit import audit_dataset

    report = audit_dataset(root, progress=not as_json, shortcuts=shortcuts, external=external or (), out_dir=out,
                           border_crop=border_crop)
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
        return
    print_rows([{"split": s, **c, **{f"{k} patients": v for k, v in report.patients[s].items()}}
                for s, c in report.counts.items()], f"Images in {root}")
    lines = [
        f"unreadable files: {len(report.unreadable)}",
        f"non-image files: {len(report.non_image_files)}",
        f"exact duplicate groups: {len(report.exact_duplicates)} "
        f"({sum(len(g) - 1 for g in report.exact_duplicates)} redundant files)",
        f"near-duplicate groups: {len(report.near_duplicates)}",
        f"patients in more than one split folder: {len(report.patients_in_several_splits)}",
        f"files with no parsable patient id: {report.unparsed_patient_names}",
        f"sizes: {report.size_stats}",
        f"modes: {report.modes}",
    ]
    console.print("\n".join(lines))
    for item in report.unreadable[:20]:
        console.print(f"  unreadable: {item['file']}: {item['reason']}", highlight=False)
    for group in report.exact_duplicates[:10]:
        console.print(f"  duplicate: {' = '.join(group)}", highlight=False)
    if report.shortcuts is not None:
        print_shortcuts(report.shortcuts)
        if out is not None:
            console.print(f"shortcut audit table, JSON and figures in {out}")


def print_shortcuts(shortcuts: dict[str, Any]) -> None:
    """The shortcut audit's ROC AUCs (one row per feature group) and its warnings."""
    from cxrdistill.data.shortcut_outputs import auc_columns
    from cxrdistill.data.shortcuts import ShortcutReport

    columns = auc_columns(ShortcutReport(**shortcuts))
    if not columns:
        console.print("shortcut audit: no folder large enough to score (each class needs 2 patients)")
        return
    rows = [{"features": group, **{name: " / ".join(f"{v:.3f}" for v in aucs[group].values())
                                   for name, aucs in columns.items()}}
            for group in next(iter(columns.values()))]
    names = " / ".join(next(iter(next(iter(columns.values())).values())).keys())
    print_rows(rows, f"Shortcut audit: ROC AUC of trivial image features for the label ({names}; chance 0.5)")
    for line in shortcuts["warnings"]:
        errors.print(f"[bold yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


@data_app.command("synth")
@friendly_errors
def data_synth(
    out: Path,
    seed: int = 0,
    normal_patients: int = 24,
    pneumonia_patients: int = 36,
) -> None:
    """Write a small SYNTHETIC chest-X-ray-like data set in the Kermany layout (offline default)."""
    from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset

    counts = make_synthetic_dataset(
        out, SynthSpec(normal_patients=normal_patients, pneumonia_patients=pneumonia_patients, seed=seed)
    )
    print_rows([{"split": s, **c} for s, c in counts.items()], f"SYNTHETIC data written to {out}")


@app.command()
@friendly_errors
def demo(
    data: Annotated[Path | None, typer.Option(help="Your data root; default: the bundled sample of real X-rays.")
                    ] = None,
    synthetic: Annotated[bool, typer.Option(help="Train on a SYNTHETIC set instead (no real X-rays).")] = False,
    out: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs/demo"),
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    seeds: Annotated[int | None, typer.Option(
        help="Seeds per student (default: 3 on the bundled sample, 1 on other data).", min=1)] = None,
    overrides: Overrides = None,
) -> None:
    """Teacher, plain student and distilled student end to end, on CPU in minutes (real X-rays by default).

    Overrides apply to every model trained, e.g. ``train.threads=1`` on a machine busy with other jobs.
    """
    from cxrdistill.experiments.demo import run_demo

    if data is not None and synthetic:
        raise typer.BadParameter("give either --data or --synthetic, not both")
    rows = run_demo(data, out, progress=not quiet, extra=overrides, synthetic=synthetic,
                    seeds=None if seeds is None else tuple(range(seeds)))
    source = {"sample": "the bundled sample of real Kermany X-rays", "synthetic": "SYNTHETIC data, not X-rays",
              "data": str(data)}[rows[0]["data"]]
    first = rows[0]
    print_rows([{k: v for k, v in row.items() if k not in ("data", "split", "images", "patients", "threshold")}
                for row in rows],
               f"Demo on {source}: held-out {first['split']} split, {first['images']} images of "
               f"{first['patients']} patients (none seen in training), threshold {first['threshold']:g}")


@app.command()
@friendly_errors
def export(
    checkpoint: Path,
    out: Annotated[Path, typer.Option(help="Where to write the .onnx file.")] = Path("model.onnx"),
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also write an INT8 model (ONNX Runtime static quantisation) beside it: *.int8.onnx.")] = False,
    calibration_data: Annotated[Path | None, typer.Option(
        help="--int8: the checkpoint's training data folder, if not where the checkpoint says (calibration uses its "
             "train split, the accuracy check its val split).")] = None,
    calibration_images: Annotated[int, typer.Option(help="--int8: training images to calibrate on.")] = 300,
    external: ExternalOption = None,
) -> None:
    """Export a checkpoint to ONNX (metadata embedded), verified against ONNX Runtime; optionally INT8 too."""
    from cxrdistill.deployment.export import export_onnx

    if not int8:
        result = export_onnx(checkpoint, out)
        console.print(f"wrote {result.path} ({result.size_mb:.1f} MB); ONNX Runtime vs PyTorch max |diff| "
                      f"{result.max_abs_difference:.2e}; model card: {result.path.parent / 'MODEL_CARD.md'}")
        return
    from cxrdistill.deployment.quantize import agreement_rows, export_int8, int8_agreement

    quantised = export_int8(checkpoint, out, calibration_data, calibration_images)
    console.print(f"wrote {quantised.fp32.path} ({quantised.fp32.size_mb:.1f} MB) and {quantised.path} "
                  f"({quantised.size_mb:.1f} MB, {quantised.size_ratio:.2f}x), calibrated on "
                  f"{quantised.calibration_images} training images of {quantised.calibration_source}")
    agreements = int8_agreement(checkpoint, quantised.fp32.path, quantised.path, calibration_data, external or [])
    if agreements:
        print_rows(agreement_rows(agreements), "fp32 vs int8 (ONNX Runtime) on labelled images")


@app.command()
@friendly_errors
def profile(
    targets: Annotated[list[str], typer.Argument(help="Model names (alexnet, inception_v3) or checkpoints; "
                                                     "two give a ratio column.")],
    device: str = "auto",
    batch_size: Annotated[int, typer.Option(help="Batch for throughput and training steps.")] = 32,
    size: Annotated[int | None, typer.Option(help="Input size (default: the model's own).")] = None,
    repeats: Annotated[int, typer.Option(help="Batch-1 latency calls.")] = 20,
    train_steps: Annotated[int, typer.Option(help="Timed training steps.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters, FLOPs, size, latency, throughput, memory (and GPU utilisation on CUDA): Table V."""
    from cxrdistill.deployment.profile import format_table, profile_model

    profiles = [profile_model(t, device, batch_size, size, repeats, train_steps) for t in targets]
    if as_json:
        print(json.dumps([p.as_dict() for p in profiles], indent=1))
        return
    console.print(format_table(profiles))


@app.command()
@friendly_errors
def predict(
    model: Annotated[Path, typer.Argument(help="A checkpoint (.safetensors) or an exported model (.onnx).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, TIFF, DICOM) or folders of them.")],
    threshold: Annotated[float | None, typer.Option(
        help="PNEUMONIA when its probability is at least this (default: see --operating-point).",
        min=0.0, max=1.0)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write a CSV (file, probability, label, threshold, heatmap, error, ood_score, ood_flag) and print a "
             "summary.")] = None,
    heatmap: Annotated[Path | None, typer.Option(help="Folder for a Grad-CAM overlay PNG per image.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="With an .onnx MODEL: the checkpoint it was exported from, for --heatmap.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    operating_point: OperatingPointOption = "default",
) -> None:
    """Classify images with a student (PyTorch checkpoint or ONNX via ONNX Runtime); unreadable files are
    listed and skipped."""
    from dataclasses import asdict

    from cxrdistill.deployment.predict import Predictor, expand_inputs, predict_files, write_predictions_csv
    from cxrdistill.errors import InvalidArgumentError

    files = expand_inputs(inputs)
    if not files:
        raise InvalidArgumentError(f"no image files in {', '.join(map(str, inputs))}")
    predictor = Predictor(model, threshold, checkpoint, operating_point)
    if not as_json:
        console.print(f"threshold {predictor.threshold:.4g}: {predictor.threshold_in_use.rule} "
                      f"({predictor.threshold_in_use.reason})", highlight=False)
    results = predict_files(predictor, files, heatmap_dir=heatmap, progress=not (as_json or quiet))
    if out is not None:
        write_predictions_csv(results, out)
    if as_json:
        print(json.dumps([asdict(r) for r in results], indent=1))
        return
    unreadable = [r for r in results if r.error is not None]
    if out is None:
        print_rows([{"file": r.file, "prob_pneumonia": r.prob_pneumonia if r.error is None else "-",
                     "predicted": r.shown_label or f"unreadable: {r.error}",
                     **({} if r.ood_score is None else {"ood_score": r.ood_score})} for r in results],
                   f"Predictions of {model} (PNEUMONIA at probability >= {results[0].threshold:.4g})")
        return
    positives = sum(r.predicted == "PNEUMONIA" for r in results)
    flagged = sum(bool(r.ood_flag) for r in results)
    console.print(f"{len(results)} files: {len(results) - len(unreadable)} classified ({positives} PNEUMONIA at "
                  f"probability >= {results[0].threshold:.4g}; {flagged} flagged as not like the training images), "
                  f"{len(unreadable)} unreadable and skipped; "
                  f"predictions in {out}" + (f", heat maps in {heatmap}" if heatmap else ""), highlight=False)
    for r in unreadable[:20]:
        console.print(f"  unreadable: {r.file}: {r.error}", highlight=False)
    if len(unreadable) > 20:
        console.print(f"  ... and {len(unreadable) - 20} more (see the error column of {out})", highlight=False)


@app.command("fit-ood")
@friendly_errors
def fit_ood(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint to fit the check for (rewritten in place).")],
    data: Annotated[Path | None, typer.Option(
        help="The run's data folder, if not where the checkpoint says (fitted on its train split, the threshold "
             "set on its val split).")] = None,
    score: Annotated[str, typer.Option(help="mahalanobis or energy.")] = "mahalanobis",
    features: Annotated[str, typer.Option(help="pooled (last convolution's block) or penultimate.")] = "pooled",
    percentile: Annotated[float, typer.Option(help="Threshold: this percentile of the val split's scores.",
                                              min=0.0, max=100.0)] = 99.0,
    max_train_images: Annotated[int | None, typer.Option(help="Fit on a random sample of this many training "
                                                              "images (all by default).", min=2)] = None,
) -> None:
    """Fit the out-of-distribution check (images not like the training images) and store it in the checkpoint."""
    from cxrdistill.deployment.ood import fit_ood as fit

    record = fit(checkpoint, data, score, features, percentile=percentile, max_train_images=max_train_images).record
    console.print(f"{checkpoint}: {record['score']} score on {record['features']} features ({record['layer']}), "
                  f"fitted on {record['fitted_on']['count']} training images; threshold {record['threshold']:.4g} "
                  f"({record['threshold_rule']}, {record['threshold_on']['count']} images); "
                  f"{record['fit_seconds']:.0f} s", highlight=False)


@app.command()
@friendly_errors
def serve(
    model: Annotated[Path, typer.Option(help="A checkpoint (.safetensors) or an exported model (.onnx), loaded once.")],
    host: Annotated[str, typer.Option(help="Address to bind; the default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    checkpoint: Annotated[Path | None, typer.Option(
        help="With an .onnx MODEL: the checkpoint it was exported from, for heat maps.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="PNEUMONIA threshold (default: see --operating-point).", min=0.0, max=1.0)] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB.", min=0.001)] = 64.0,
    operating_point: OperatingPointOption = "default",
) -> None:
    """Serve the model over HTTP: a page at / to upload an X-ray, POST /predict, GET /health."""
    from cxrdistill.deployment.service import is_loopback
    from cxrdistill.deployment.service import serve as run_service

    if not is_loopback(host):
        errors.print(f"[bold yellow]warning:[/] binding to {host}: the service has no authentication; anyone who "
                     "can reach this address can upload images", highlight=False)
    console.print(f"serving {model} at http://{host}:{port}/ (research software, not a medical device)",
                  highlight=False)
    run_service(model, host, port, checkpoint, threshold, int(max_upload_mb * 1024 * 1024), operating_point)


def with_external(config: ExperimentConfig, external: list[Path] | None) -> ExperimentConfig:
    """``--external`` folders, when given, replace the config's ``data.external``."""
    if external:
        config.data.external = [str(folder) for folder in external]
    return config


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


@app.command("sweep-temperature")
@friendly_errors
def sweep_temperature(
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint shared by every student.")],
    config: ConfigOption = None,
    overrides: Overrides = None,
    temperatures: Annotated[str | None, typer.Option(
        help="Comma-separated temperatures (default: the paper's Table II, 1,10,20,30,40,50).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the runs, sweep.csv/.md and sweep.png.")] = Path(
        "runs/sweep-temperature"),
    external: ExternalOption = None,
    synthetic: SyntheticOption = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """One distilled student per temperature (the paper's Table II), reusing one cached teacher."""
    from cxrdistill.experiments.sweep import sweep_temperature as run_sweep
    from cxrdistill.paper import paper_temperatures

    experiment = with_external(load_config(config, with_synthetic(overrides, synthetic)), external)
    chosen = _floats(temperatures) if temperatures is not None else paper_temperatures()
    rows = run_sweep(experiment, teacher, out, chosen, progress=not quiet)
    print_rows(rows, f"Distilled student by temperature (results in {out})")


@app.command()
@friendly_errors
def compare(
    overrides: Overrides = None,
    arm: Annotated[list[str] | None, typer.Option(
        help="NAME=CONFIG (a preset name or a YAML file), repeatable. Default: student=cpu/student "
             "and student_kd=cpu/student_kd.")] = None,
    teacher_config: Annotated[str | None, typer.Option(
        help="Teacher config: a preset name or a YAML file (default: cpu/teacher).")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Use this trained teacher instead of training one.")] = None,
    no_teacher: Annotated[bool, typer.Option(help="Compare the arms only (no teacher arm).")] = False,
    seeds: Annotated[int, typer.Option(help="Seeds per arm.")] = 3,
    difference: Annotated[str, typer.Option(help="Paired difference A,B to report (A - B).")] = "student_kd,student",
    teacher_per_seed: Annotated[bool, typer.Option(help="Train the teacher once per seed too.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for runs and REPORT.{json,csv,md,png}.")] = Path("runs/compare"),
    report: Annotated[str, typer.Option(help="File stem of the result tables and plot.")] = "compare",
    external: ExternalOption = None,
    synthetic: SyntheticOption = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Teacher vs plain vs distilled student over several seeds, with paired differences (Table VI)."""
    from cxrdistill.config import preset
    from cxrdistill.experiments.compare import compare as run_compare

    extra = with_synthetic(overrides, synthetic)
    if arm:
        arms = {}
        for item in arm:
            name, _, path = item.partition("=")
            if not path:
                raise typer.BadParameter(f"--arm expects NAME=CONFIG, got {item!r}")
            arms[name] = load_config(path, extra)
    else:
        arms = {"student": preset("cpu/student", extra), "student_kd": preset("cpu/student_kd", extra)}
    teacher_cfg = None
    if not no_teacher and teacher is None:
        teacher_cfg = load_config(teacher_config, extra) if teacher_config else preset("cpu/teacher", extra)
    for experiment in [*arms.values(), *([teacher_cfg] if teacher_cfg else [])]:
        with_external(experiment, external)
    pair = tuple(difference.split(",")) if difference else None
    if pair is not None and (len(pair) != 2 or not set(pair) <= set(arms)):
        raise typer.BadParameter(f"--difference must name two arms among {sorted(arms)}, got {difference!r}")
    result = run_compare(arms, out, list(range(seeds)), teacher_cfg, teacher, pair, teacher_per_seed,
                         progress=not quiet, report=report)
    columns = ["set", "threshold", "arm", "seeds",
               *(f"{m}_mean" for m in ("accuracy", "specificity", "sensitivity", "roc_auc"))]
    print_rows([{c: row[c] for c in columns} for row in result.summary], f"Comparison (results in {out})")
    if result.difference:
        print_rows(result.difference, "Paired difference over seeds (95% Student-t interval)")


@app.command()
@friendly_errors
def reproduce(
    overrides: Overrides = None,
    data: Annotated[Path | None, typer.Option(help="Kermany root; default: the bundled sample of real X-rays.")
                    ] = None,
    preset_name: Annotated[str, typer.Option("--preset", help="A plan: demo, cpu or paper (the presets "
                                                              "reproduce/NAME), or a plan file.")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Study folder (default: runs/reproduce-PRESET).")] = None,
    external: ExternalOption = None,
    plan: Annotated[list[str] | None, typer.Option(help="Change the plan: KEY=VALUE, e.g. seeds=[0] (repeatable).")
                    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars (each step still prints its name).")] = False,
) -> None:
    """The paper's whole study as resumable steps, and a report beside its tables (Markdown and HTML).

    Re-running the same command skips finished steps and continues interrupted training runs.
    """
    from cxrdistill.paper.reproduce import reproduce as run_reproduce

    result = run_reproduce(preset_name, data, out, external, overrides, plan, progress=not quiet)
    print_rows([{"step": r.step, "status": r.status, "wall s": r.wall_s if r.wall_s is not None else "-"}
                for r in result.steps], f"Study in {result.out}")
    console.print(f"report: {result.report_markdown} and {result.report_html}", highlight=False)


@app.command()
@friendly_errors
def calibrate(
    checkpoint: Path,
    data: Annotated[Path, typer.Option(help="Local labelled folder (bare NORMAL/ + PNEUMONIA/, or a root).")],
    out: Annotated[Path, typer.Option(help="Where to write the calibrated checkpoint.")],
    split: Annotated[str, typer.Option(help="Split of a Kermany root to use (ignored for a bare folder); never the "
                                            "test split you will report on.")] = "val",
    policy: PolicyOption = None,
    min_sensitivity: MinSensitivityOption = None,
    fixed_threshold: FixedThresholdOption = None,
    device: str = "auto",
    cache_dir: CacheDirOption = None,
) -> None:
    """Refit the temperature and the operating threshold on a site's own labelled images (new checkpoint).

    Report results on other images than these: see calibrate-and-evaluate.
    """
    from cxrdistill.evaluation.calibrate import calibrate_checkpoint

    result = calibrate_checkpoint(checkpoint, data, out, split, device, cache_dir=cache_dir, threshold_policy=policy,
                                  min_sensitivity=min_sensitivity, fixed_threshold=fixed_threshold)
    console.print(f"wrote {result.checkpoint}: temperature {result.temperature:.4g}, threshold "
                  f"{result.operating_point['threshold']:.4g} ({result.operating_point['policy']}) fitted on "
                  f"{result.calibration['count']} images of {result.calibration['data']}", highlight=False)


@app.command()
@friendly_errors
def adapt(
    checkpoint: Path,
    images: Annotated[Path, typer.Option(help="A folder of the site's films (unlabelled; class folders are not "
                                              "read as labels).")],
    out: Annotated[Path, typer.Option(help="Where to write the adapted checkpoint.")],
    prior: Annotated[bool, typer.Option(help="Estimate the site's share of pneumonia (EM) and correct for it.")] = True,
    batchnorm: Annotated[bool, typer.Option(help="Re-estimate BatchNorm statistics on the films (AdaBN).")] = True,
    training_prior: Annotated[float | None, typer.Option(
        help="Share of pneumonia the model's outputs assume (default: 0.5 for class-balanced training).",
        min=0.0, max=1.0)] = None,
    device: str = "auto",
) -> None:
    """Adapt a model to a site from unlabelled films: share of pneumonia, BatchNorm statistics (new checkpoint)."""
    from cxrdistill.evaluation.adaptation import adapt_checkpoint

    result = adapt_checkpoint(checkpoint, images, out, prior, batchnorm, training_prior, device)
    record, shift = result.adaptation, result.prior_shift
    console.print(f"wrote {result.checkpoint}: adapted {', '.join(record['adapted']) or 'nothing'} on "
                  f"{record['images']} images; BatchNorm {record['batchnorm']}", highlight=False)
    if shift:
        console.print(f"share of pneumonia: model assumed {shift['model_prior']:.3g} ({shift['model_prior_source']}), "
                      f"site estimated {shift['site_prior']:.3g}", highlight=False)


@app.command("calibrate-and-evaluate")
@friendly_errors
def calibrate_and_evaluate(
    checkpoint: Path,
    data: Annotated[Path, typer.Option(help="Labelled folder, e.g. an external set such as Kermany's half A.")],
    out: Annotated[Path, typer.Option(help="Folder for split.json, calibrated.safetensors/.json and evaluation/.")],
    calibration_fraction: Annotated[float, typer.Option(help="Share of images (whole patients) to calibrate on.")
                                    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the patient-wise split.")] = 0,
    split: Annotated[str, typer.Option(help="Split of a Kermany root to use (ignored for a bare folder).")] = "val",
    policy: PolicyOption = None,
    min_sensitivity: MinSensitivityOption = None,
    fixed_threshold: FixedThresholdOption = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    device: str = "auto",
    cache_dir: CacheDirOption = None,
) -> None:
    """Split a labelled folder by patient, calibrate on one part and report on the other (honest numbers)."""
    from cxrdistill.evaluation.calibrate import calibrate_and_evaluate as run

    result, report = run(checkpoint, data, out, calibration_fraction, seed, split, bootstrap, device,
                         cache_dir=cache_dir, threshold_policy=policy, min_sensitivity=min_sensitivity,
                         fixed_threshold=fixed_threshold)
    print_rows(metric_rows(report), f"{result.checkpoint} on {report.data} ({report.count} images)")
    console.print(f"temperature {result.temperature:.4g}; results in {report.out_dir}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="cxrdistill")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
