"""``cxrdistill reproduce``: the paper's whole study in one command, as resumable steps, with a report.

A plan (the presets ``reproduce/{demo,cpu,paper}``) names the steps, seeds, temperatures and the
experiment presets. Each step writes its result to ``OUT/results/{step}.json`` and a marker
``OUT/steps/{step}.json`` holding a hash of everything it depends on (plan section, experiment
settings, data folders) and its wall time. Re-running skips a step whose marker matches; a step that
was interrupted continues its training runs from their checkpoints (``train_or_resume``). The report
(``OUT/report/REPORT.md`` and ``REPORT.html``, see :mod:`cxrdistill.paper.report.study`) is rebuilt at the end
of every invocation from whatever steps have finished.

Steps, with the paper's table each one answers:

* ``audit`` — the data audit (counts, duplicates, patient leaks) of the training root.
* ``models`` — Table I: parameters, depth and multiply-adds of each architecture at its own size.
* ``zoo`` — Table IV: the five architectures trained briefly on the same split.
* ``compare`` — Table VI: teacher vs plain vs distilled student over the seeds (the compare API).
* ``teacher``, ``student`` — the teacher and the plain student of the first seed (trained by ``compare``
  when it ran first; on their own otherwise), with their training time.
* ``sweep`` — Table II: one distilled student per temperature.
* ``profile`` — Table V (and Table I measured): cost of the teacher and the student (deployment.profile).
* ``external`` — every trained run's metrics on each external set, with intervals.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrdistill.config import ConfigError, ExperimentConfig, ModelConfig, load_config, load_named
from cxrdistill.config.presets import PLAN_FOLDER
from cxrdistill.data.layout import scan_dataset
from cxrdistill.data.sample import extract_sample
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.evaluate import (
    load_run_evaluation,
    predict_checkpoint,
)
from cxrdistill.evaluation.metrics import MetricEstimate
from cxrdistill.experiments.run import handed_on_checkpoint, train_or_resume
from cxrdistill.files import atomic_write_json, text_digest
from cxrdistill.paper.tables import paper_temperatures
from cxrdistill.provenance import describe_machine, git_state, package_versions

STEPS: tuple[str, ...] = ("audit", "models", "zoo", "compare", "teacher", "student", "sweep", "profile", "external")
"""In running order: ``compare`` trains the first seed's teacher and student, which their own steps then collect."""
ROLES: tuple[str, ...] = ("teacher", "student", "student_kd")


@dataclass
class ZooPlan:
    """Table IV: each architecture trained briefly from the preset named beside it (``model.name`` replaced)."""

    models: dict[str, str] = field(default_factory=lambda: {
        "alexnet": "cpu/student", "vgg16": "cpu/student", "resnet18": "cpu/student", "resnet34": "cpu/student",
        "inception_v3": "cpu/teacher"})
    overrides: list[str] = field(default_factory=lambda: ["train.epochs=3"])


@dataclass
class ProfilePlan:
    """Table V: the teacher's and the student's trained checkpoints, profiled with :func:`profile_model`."""

    batch_size: int = 32
    repeats: int = 20
    train_steps: int = 5
    device: str = "auto"
    isolate: bool = True
    """Profile in a fresh process, so memory peaks are the model's own (see deployment.profile)."""


@dataclass
class ReproducePlan:
    name: str = "cpu"
    description: str = ""
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    temperatures: list[float] = field(default_factory=lambda: list(paper_temperatures()))
    teacher: str = "cpu/teacher"
    student: str = "cpu/student"
    student_kd: str = "cpu/student_kd"
    """Experiment configs of the three roles: preset names or YAML files (see :mod:`cxrdistill.config.presets`)."""
    overrides: list[str] = field(default_factory=list)
    """Applied to every experiment of the plan (e.g. ``data.max_per_class=600``)."""
    zoo: ZooPlan = field(default_factory=ZooPlan)
    profile: ProfilePlan = field(default_factory=ProfilePlan)


def load_plan(name: str | Path, overrides: list[str] | None = None) -> ReproducePlan:
    """A plan by preset name (``demo``, ``cpu``, ``paper``: the package's ``configs/reproduce/``) or a file.

    The rule of :func:`~cxrdistill.config.find_config`: an existing file is that file, anything else a name.
    """
    plan = load_named(ReproducePlan, name, overrides, PLAN_FOLDER)
    unknown = sorted(set(plan.steps) - set(STEPS))
    if unknown:
        raise ConfigError(f"plan {name}: unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}")
    if not plan.seeds:
        raise ConfigError(f"plan {name}: seeds must name at least one seed")
    return plan


@dataclass
class StepRecord:
    step: str
    status: str
    """``ran`` in this invocation, ``skipped`` (finished earlier with the same settings) or ``not planned``."""
    wall_s: float | None = None


@dataclass
class ReproduceResult:
    out: Path
    steps: list[StepRecord]
    report_markdown: Path
    report_html: Path

    def of(self, status: str) -> list[str]:
        return [record.step for record in self.steps if record.status == status]


def plain(value: Any) -> Any:
    """JSON-ready copy: metric estimates and other dataclasses as dicts, paths as text."""
    if isinstance(value, MetricEstimate) or dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def run_seconds(run_dir: Path) -> float:
    """Training time of a run: the sum of its epochs' wall times (``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return float("nan")
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line.strip())


class Study:
    """One reproduction in ``out``: the plan, the data and the steps, each run at most once per settings."""

    def __init__(self, plan: ReproducePlan, data: Path, out: Path, external: list[Path], overrides: list[str],
                 progress: bool = True):
        self.plan, self.root, self.out = plan, Path(data), Path(out)
        self.external, self.user_overrides, self.progress = [Path(e) for e in external], overrides, progress
        self.runs = self.out / "runs"
        self.records: dict[str, StepRecord] = {}

    # -- experiment configs ---------------------------------------------------------------------------
    def experiment(self, preset_name: str, name: str, seed: int, output_dir: Path,
                   extra: list[str] = ()) -> ExperimentConfig:
        """A preset with the plan's, the step's and the user's overrides (in that order), placed in the study."""
        config = load_config(preset_name, [*self.plan.overrides, *extra, *self.user_overrides])
        config.output_dir, config.name = str(output_dir), name
        config.train.seed, config.data.root = seed, str(self.root)
        config.data.external = [str(folder) for folder in self.external]
        return config

    def role(self, role: str, seed: int | None = None) -> ExperimentConfig:
        """Teacher, student or distilled student of ``seed``, where :func:`compare` places and configures it."""
        seed = self.plan.seeds[0] if seed is None else seed
        config = self.experiment(getattr(self.plan, role), role, seed, self.runs / f"seed{seed}")
        if config.distill.teacher is not None:
            config.distill.teacher = str(handed_on_checkpoint(self.role("teacher")))
        return config

    def zoo_configs(self) -> dict[str, ExperimentConfig]:
        return {model: self.experiment(name, model, self.plan.seeds[0], self.runs / "zoo",
                                       [*self.plan.zoo.overrides, f"model.name={model}"])
                for model, name in self.plan.zoo.models.items()}

    # -- step machinery -------------------------------------------------------------------------------
    def settings(self, step: str) -> Any:
        """What a step's result depends on; a change makes the step run again."""
        roles = {r: self.role(r).to_dict() for r in ROLES}
        by_step: dict[str, Any] = {
            "audit": str(self.root),
            "models": sorted(self.plan.zoo.models),
            "zoo": {m: c.to_dict() for m, c in self.zoo_configs().items()},
            "teacher": roles["teacher"],
            "student": roles["student"],
            "compare": [roles, self.plan.seeds],
            "sweep": [roles["teacher"], roles["student_kd"], self.plan.temperatures],
            "profile": [roles["teacher"], roles["student"], dataclasses.asdict(self.plan.profile)],
            "external": [roles, self.plan.seeds, [str(e) for e in self.external]],
        }
        return [step, str(self.root), by_step[step]]

    def marker(self, step: str) -> Path:
        return self.out / "steps" / f"{step}.json"

    def result_path(self, step: str) -> Path:
        return self.out / "results" / f"{step}.json"

    def run_step(self, step: str) -> dict:
        """Run ``step`` unless it finished earlier with the same settings; returns its result."""
        digest = text_digest(self.settings(step))
        marker, result_path = self.marker(step), self.result_path(step)
        if marker.is_file() and result_path.is_file():
            done = json.loads(marker.read_text())
            if done.get("settings_digest") == digest:
                self.records.setdefault(step, StepRecord(step, "skipped", done.get("wall_s")))
                return json.loads(result_path.read_text())
        print(f"=== step {step}", flush=True)  # even without progress bars: a long study says where it is
        started, began = time.perf_counter(), describe_machine()["date"]
        result = plain(getattr(self, f"step_{step}")())
        wall = time.perf_counter() - started
        atomic_write_json(result_path, result)
        atomic_write_json(marker, {"step": step, "settings_digest": digest, "started": began, "wall_s": wall,
                                   "finished": describe_machine()["date"], "device": self.device_name()})
        self.records[step] = StepRecord(step, "ran", wall)
        return result

    def device_name(self) -> str:
        from cxrdistill.runtime.device import resolve_device

        return str(resolve_device(self.role("student").train.device))

    # -- the steps ------------------------------------------------------------------------------------
    def step_audit(self) -> dict:
        from cxrdistill.data.audit import audit_dataset

        return {"root": str(self.root), **audit_dataset(self.root, progress=self.progress).as_dict()}

    def step_models(self) -> dict:
        from cxrdistill.models.summary import summarize

        return {"models": [summarize(ModelConfig(name=m)).as_dict() for m in self.plan.zoo.models]}

    def step_zoo(self) -> dict:
        from cxrdistill.models.summary import summarize

        models = {}
        for model, config in self.zoo_configs().items():
            if self.progress:
                print(f"== zoo: {model}")
            checkpoint = train_or_resume(config, self.progress)
            summary = summarize(config.model, config.data.image_size)
            models[model] = {"checkpoint": checkpoint, "input_size": summary.input_size,
                             "gflops": summary.gflops, "params_m": summary.params_m,
                             "train_seconds": run_seconds(config.run_dir), **self.evaluation_of(checkpoint)}
        return {"models": models}

    def train_role(self, role: str) -> dict:
        config = self.role(role)
        checkpoint = train_or_resume(config, self.progress)
        return {"checkpoint": checkpoint, "run_dir": config.run_dir, "train_seconds": run_seconds(config.run_dir),
                **self.evaluation_of(checkpoint)}

    def step_teacher(self) -> dict:
        return self.train_role("teacher")

    def step_student(self) -> dict:
        return self.train_role("student")

    def step_compare(self) -> dict:
        from cxrdistill.experiments.compare import compare

        arms = {role: self.role(role) for role in ("student", "student_kd")}
        result = compare(arms, self.runs, self.plan.seeds, self.role("teacher"), None, ("student_kd", "student"),
                         progress=self.progress, report="table6")
        roc = {}
        for role in ROLES:
            config = self.role(role)
            records, predictions, _, description = predict_checkpoint(
                handed_on_checkpoint(config), self.root, "test", progress=False, cache_dir=config.data.cache_dir)
            roc[role] = {"data": description, "labels": predictions.labels.tolist(),
                         "prob_pneumonia": predictions.prob_positive.round(6).tolist()}
        return {**result.as_dict(), "roc_test_first_seed": roc, "checkpoints": self.compared_checkpoints()}

    def compared_checkpoints(self) -> dict[str, dict[int, Path]]:
        """Table VI's models: the one teacher (trained on the first seed) and each seed's two students."""
        teacher = {self.plan.seeds[0]: handed_on_checkpoint(self.role("teacher"))}
        students = {role: {seed: handed_on_checkpoint(self.role(role, seed)) for seed in self.plan.seeds}
                    for role in ("student", "student_kd")}
        return {"teacher": teacher, **students}

    def step_sweep(self) -> dict:
        from cxrdistill.experiments.sweep import sweep_temperature

        teacher = self.run_step("teacher")["checkpoint"]
        config = self.role("student_kd")
        rows = sweep_temperature(config, teacher, self.runs / "sweep", tuple(self.plan.temperatures), self.progress)
        return {"teacher": teacher, "rows": rows}

    def step_profile(self) -> dict:
        from cxrdistill.deployment.profile import profile_model

        settings = self.plan.profile
        profiles = {}
        for role in ("teacher", "student"):
            checkpoint = self.run_step(role)["checkpoint"]
            if self.progress:
                print(f"== profile: {role}")
            profiles[role] = profile_model(checkpoint, settings.device, settings.batch_size, None, settings.repeats,
                                           settings.train_steps, isolate=settings.isolate).as_dict()
        return {"profiles": profiles}

    def step_external(self) -> dict:
        self.run_step("compare")  # trains the runs below unless it has already
        checkpoints = self.compared_checkpoints()
        sets = []
        for folder in self.external:
            found = scan_dataset(folder)
            records = found[""] if "" in found else found.get("test", [])
            runs = [{"role": role, "seed": int(seed), "results": evaluation_results(path, folder.name)}
                    for role, by_seed in checkpoints.items() for seed, path in by_seed.items()]
            sets.append({"name": folder.name, "folder": str(folder), "images": len(records),
                         "patients": len({r.patient for r in records}),
                         "by_class": {c: sum(r.class_name == c for r in records) for c in ("NORMAL", "PNEUMONIA")},
                         "runs": runs})
        return {"sets": sets}

    def evaluation_of(self, checkpoint: Path) -> dict:
        """Test and val metrics (both thresholds, with intervals) from the run's ``evaluation.json``."""
        return {name: evaluation_results(checkpoint, name) for name in ("val", "test")}

    # -- the whole study ------------------------------------------------------------------------------
    def run(self) -> ReproduceResult:
        from cxrdistill.paper.report.study import write_report

        environment = {"machine": describe_machine(), "versions": package_versions(), "git": git_state(),
                       "plan": dataclasses.asdict(self.plan), "data": str(self.root),
                       "external": [str(e) for e in self.external], "user_overrides": self.user_overrides}
        atomic_write_json(self.out / "results" / "environment.json", environment)
        for step in STEPS:
            if step in self.plan.steps:
                self.run_step(step)
        records = [self.records.get(s, StepRecord(s, "not planned")) for s in STEPS]
        markdown, html = write_report(self.out)
        return ReproduceResult(self.out, records, markdown, html)


def evaluation_results(checkpoint: str | Path, set_name: str) -> list[dict]:
    """One set's results (threshold rule, threshold, metrics with intervals, confusion) from ``evaluation.json``."""
    evaluation = load_run_evaluation(checkpoint).get(set_name)
    if evaluation is None:
        return []
    return [{"count": evaluation.count, "patients": evaluation.patients, **result.as_dict()}
            for result in evaluation.results]


def reproduce(
    preset_name: str | Path = "cpu",
    data: str | Path | None = None,
    out: str | Path | None = None,
    external: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    plan_overrides: list[str] | None = None,
    progress: bool = True,
) -> ReproduceResult:
    """Run (or continue) the study of ``preset_name`` on ``data`` (default: the bundled real-X-ray sample).

    ``overrides`` (``train.epochs=1``) apply to every experiment after the plan's own; ``plan_overrides``
    (``seeds=[0]``) change the plan itself. Results, runs and the report go to ``out``
    (default ``runs/reproduce-PRESET``).
    """
    plan = load_plan(preset_name, plan_overrides)
    out = Path(out) if out is not None else Path("runs") / f"reproduce-{plan.name}"
    if data is None:
        data = extract_sample(out / "sample-data")
    elif not Path(data).is_dir():
        raise InvalidArgumentError(f"--data {data} is not a folder")
    return Study(plan, Path(data), out, [Path(e) for e in external or []], list(overrides or []), progress).run()


