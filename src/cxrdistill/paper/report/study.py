"""The reproduction report: each of the paper's tables with our value beside the paper's, and what differs.

Reads only what ``cxrdistill reproduce`` left in its folder (``results/*.json``, ``steps/*.json``, the
runs' ``config.yaml`` and ``metrics.jsonl``) and the paper's figures from ``paper/tables.yaml``,
so it can be rebuilt at any time from whatever steps have finished. Writes ``report/REPORT.md`` (figures
beside it in ``report/figures/``) and ``report/REPORT.html`` (one page, figures inlined).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from cxrdistill.config import ModelConfig, preset
from cxrdistill.files import atomic_write_text
from cxrdistill.models import input_size
from cxrdistill.paper.report.document import (
    Bullets,
    Code,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from cxrdistill.paper.report.figures import (
    plot_accuracy_against_cost,
    plot_against_temperature,
    plot_roc_curves,
    plot_training_curves,
)
from cxrdistill.paper.tables import paper_rows

ROLE_NAMES = {"teacher": "teacher", "student": "plain student", "student_kd": "distilled student"}
MAIN_METRICS = ("accuracy", "specificity", "sensitivity")


def pct(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def bracket_pct(low: float, high: float) -> str:
    """``[low, high]`` in percent, or a dash when the interval is undefined (one run, one pair)."""
    return "–" if math.isnan(low) else f"[{pct(low)}, {pct(high)}]"


def interval_pct(estimate: dict) -> str:
    """A bootstrap estimate ``{"value", "low", "high"}`` as ``95.83 [94.10, 97.20]`` percent."""
    if math.isnan(estimate["low"]):
        return pct(estimate["value"])
    return f"{pct(estimate['value'])} [{pct(estimate['low'])}, {pct(estimate['high'])}]"


def seeds_pct(mean: float, std: float, n: int) -> str:
    """Mean ± std over ``n`` seeds of a proportion, with the Student-t 95 % interval of the mean in percent.

    With few seeds and a wide spread the t-interval can pass 0 or 100 %; it is cut at the bounds a
    proportion can take, so that no cell shows an impossible value.
    """
    if n < 2 or math.isnan(std):
        return pct(mean)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return f"{pct(mean)} ± {pct(std)} [{pct(max(mean - half, 0.0))}, {pct(min(mean + half, 1.0))}]"


def at_half(results: list[dict]) -> dict | None:
    """The threshold-0.5 entry of a set's results (see ``reproduce.evaluation_results``)."""
    return next((r for r in results if r["rule"] == "0.5"), None)


def read_folder(folder: Path) -> dict[str, Any]:
    """``{stem: content}`` of the JSON files in ``folder``."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


class StudyReport:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.report_dir = self.out / "report"
        self.figures = self.report_dir / "figures"
        self.results = read_folder(self.out / "results")
        self.markers = read_folder(self.out / "steps")
        self.environment = self.results.get("environment", {})
        self.plan = self.environment.get("plan", {})
        self.differences: list[str] = []

    @property
    def labels(self) -> dict[str, str]:
        """``plain student (alexnet)``: each role with the architecture it was trained as."""
        labels = {}
        for role, name in ROLE_NAMES.items():
            config = self.role_config(role)
            labels[role] = f"{name} ({config['model']['name']})" if config else name
        return labels

    def section(self, title: str, step: str, body: Callable[[dict], list]) -> list:
        """A heading, then ``body`` of the step's results, or a note that the step has not finished."""
        result = self.results.get(step)
        return [Heading(title), *(body(result) if result is not None else [self.missing(step)])]

    def missing(self, step: str) -> Paragraph:
        return Paragraph(f"Step '{step}' has not finished in this run folder "
                         f"(planned steps: {', '.join(self.plan.get('steps', [])) or 'unknown'}).")

    def role_config(self, role: str) -> dict | None:
        seeds = self.plan.get("seeds") or [0]
        path = self.out / "runs" / f"seed{seeds[0]}" / role / "config.yaml"
        return yaml.safe_load(path.read_text()) if path.is_file() else None

    # -- sections -------------------------------------------------------------------------------------
    def build(self) -> Document:
        doc = Document(f"Reproduction report — preset '{self.plan.get('name', '?')}'")
        doc.add(Paragraph(
            f"Data: {self.environment.get('data', '?')}; seeds {self.plan.get('seeds')}; "
            f"external sets: {', '.join(self.environment.get('external', [])) or 'none'}. "
            "Our figures are fractions shown in percent to sit beside the paper's; intervals are 95 %: "
            "over seeds a Student-t interval of the mean (mean ± std [interval]), for one run a patient-bootstrap "
            "interval. Every metric is on the held-out test split at threshold 0.5 unless a column says otherwise."),
            self.steps_table())
        sections = [
            self.section(title, step, body) for title, step, body in [
                ("Table VI — teacher vs plain vs distilled student", "compare", self.table_6),
                ("Table II — distilled student by temperature", "sweep", self.table_2),
                ("Table IV — the five architectures, trained briefly", "zoo", self.table_4),
                ("Table I — the architectures", "models", self.table_1),
                ("Table V — resources while training", "profile", self.table_5),
                ("External sets", "external", self.external_sets),
                ("Data audit", "audit", self.audit),
            ]]
        doc.add(Heading("Differences from the paper"), Paragraph(
            "Generated from the numbers below and the configs; the paper's figures come from "
            "src/cxrdistill/paper/tables.yaml."), Bullets(self.differences or ["No step has finished yet."]))
        for blocks in sections:
            doc.add(*blocks)
        doc.add(*self.configs(), *self.environment_section())
        return doc

    def steps_table(self) -> Table:
        """Each step's wall time, and their sum: what the study costs on this device when nothing is rerun."""
        rows, done = [], []
        for step in self.plan.get("steps", []):
            marker = self.markers.get(step)
            rows.append([step, "done" if marker else "not finished", num(marker and marker["wall_s"], 1),
                         marker["finished"] if marker else "", marker["device"] if marker else ""])
            done += [marker["wall_s"]] if marker else []
        total = sum(done)
        rows.append(["all steps", f"{len(done)} of {len(rows)} done", f"{total:.1f} ({total / 60:.1f} min)", "", ""])
        return Table(["step", "status", "wall time (s)", "finished", "device"], rows, "Steps of this study")

    def table_6(self, compare: dict) -> list:
        blocks: list = []
        paper = paper_rows("table_6")
        summary = [r for r in compare["summary"] if r["set"] == "test" and r["threshold"] == "0.5"]
        columns = ["model", "seeds"]
        for metric in MAIN_METRICS:
            columns += [f"{metric} % (ours)", f"{metric} % (paper)"]
        columns += ["ROC AUC (ours)"]
        rows = []
        for row in summary:
            arm, n = row["arm"], row["seeds"]
            cells = [self.labels.get(arm, arm), str(n)]
            for metric in MAIN_METRICS:
                ours = seeds_pct(row[f"{metric}_mean"], row[f"{metric}_std"], n)
                if n == 1:
                    ours = interval_pct(self.first_run_metric(compare, arm, metric))
                cells += [ours, num(paper.get(arm, {}).get(metric), 2)]
            cells.append(num(row["roc_auc_mean"], 3))
            rows.append(cells)
        blocks.append(Table(columns, rows, "Test split, threshold 0.5; ours: mean ± std [95 % interval] over seeds"))
        difference = [r for r in compare["difference"] if r["set"] == "test" and r["threshold"] == "0.5"
                      and r["metric"] in (*MAIN_METRICS, "roc_auc")]
        if difference:
            rows = [[r["metric"], pct(r["mean"]), bracket_pct(r["ci95_low"], r["ci95_high"]), str(r["pairs"]),
                     num(self.paper_kd_gain(r["metric"]), 2)] for r in difference]
            blocks.append(Table(["metric", "distilled − plain (points)", "95 % interval (paired t)", "seed pairs",
                                 "paper (points)"], rows, "Paired difference over seeds, test split, threshold 0.5"))
            self.kd_differences(difference, summary)
        roc = compare.get("roc_test_first_seed", {})
        if roc:
            curves = {self.labels[r]: (v["labels"], v["prob_pneumonia"]) for r, v in roc.items()}
            blocks.append(Figure(plot_roc_curves(curves, self.figures / "roc.png",
                                                 "ROC on the test split (first seed)"),
                                 "ROC of teacher, plain and distilled student on the test split (first seed)."))
        histories = {self.labels[r]: self.history(r) for r in ROLE_NAMES}
        histories = {k: v for k, v in histories.items() if v}
        if histories:
            blocks.append(Figure(plot_training_curves(histories, self.figures / "training_curves.png"),
                                 "Training curves of the first seed's runs (metrics.jsonl)."))
        return blocks

    def first_run_metric(self, compare: dict, arm: str, metric: str) -> dict:
        path = next(iter(compare["checkpoints"][arm].values()))
        evaluation = json.loads((Path(path).parent / "evaluation.json").read_text())
        return evaluation["sets"]["test"]["results"][0]["metrics"][metric]

    def history(self, role: str) -> list[dict]:
        seeds = self.plan.get("seeds") or [0]
        path = self.out / "runs" / f"seed{seeds[0]}" / role / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    @staticmethod
    def paper_kd_gain(metric: str) -> float | None:
        paper = paper_rows("table_6")
        if metric not in paper["student"]:
            return None
        return paper["student_kd"][metric] - paper["student"][metric]

    def kd_differences(self, difference: list[dict], summary: list[dict]) -> None:
        for row in difference:
            paper = self.paper_kd_gain(row["metric"])
            if paper is None:
                continue
            low, high = row["ci95_low"], row["ci95_high"]
            if math.isnan(low):
                verdict = "one seed pair: no interval, so no verdict"
            elif low > 0:
                verdict = "a gain, as in the paper" if paper > 0 else "a gain where the paper saw none"
            elif high < 0:
                verdict = "a LOSS, against the paper"
            else:
                verdict = "not established (the interval includes zero)"
            self.differences.append(
                f"Distillation gain in {row['metric']}: paper {paper:+.2f} points, ours {100 * row['mean']:+.2f}"
                f"{'' if math.isnan(low) else ' ' + bracket_pct(low, high)} over {row['pairs']} seed pair(s) — "
                f"{verdict}.")
        means = {r["arm"]: r["accuracy_mean"] for r in summary}
        if {"teacher", "student"} <= set(means):
            paper = paper_rows("table_6")
            gap = 100 * (means["teacher"] - means["student"])
            paper_gap = paper["teacher"]["accuracy"] - paper["student"]["accuracy"]
            self.differences.append(
                f"Teacher ahead of the plain student in accuracy: paper {paper_gap:+.2f} points, ours {gap:+.2f}"
                + (" — our teacher is not better than the plain student, so what distillation can pass on is "
                   "limited." if gap <= 0 else "."))

    def table_2(self, sweep: dict) -> list:
        blocks: list = []
        paper = {float(t): v for t, v in paper_rows("table_2").items()}
        test = [r for r in sweep["rows"] if r["set"] == "test" and r["rule"] == "0.5"]
        val = [r for r in sweep["rows"] if r["set"] == "val" and r["rule"] == "0.5"]
        columns = ["T"]
        for metric in ("accuracy", "loss", "specificity", "sensitivity"):
            columns += [f"{metric} (ours)", f"{metric} (paper)"]
        ours_by_t = {row["temperature"]: row for row in test}
        rows = []
        for temperature in sorted({*paper, *ours_by_t}):
            row, p = ours_by_t.get(temperature), paper.get(temperature, {})
            cells = [num(temperature, 0)]
            for metric in ("accuracy", "loss", "specificity", "sensitivity"):
                ours = "" if row is None else (num(row[metric]["value"], 4) if metric == "loss"
                                               else interval_pct(row[metric]))
                cells += [ours, num(p.get(metric), 3 if metric == "loss" else 2)]
            rows.append(cells)
        blocks.append(Table(columns, rows, "Test split, threshold 0.5, one seed; accuracy etc. in % with 95 % "
                                           "patient-bootstrap intervals; loss is mean cross-entropy"))
        ours = {m: [(r["temperature"], r[m]["value"], r[m]["low"], r[m]["high"]) for r in test] for m in MAIN_METRICS}
        paper_curves = {m: [(t, v[m] / 100) for t, v in sorted(paper.items())] for m in MAIN_METRICS}
        blocks.append(Figure(plot_against_temperature(ours, paper_curves, self.figures / "temperature.png"),
                             "Accuracy, specificity and sensitivity against T: ours with 95 % intervals (solid), "
                             "the paper's Table II (dashed)."))
        if test and val:
            best_val = max(val, key=lambda r: r["accuracy"]["value"])["temperature"]
            best_test = max(test, key=lambda r: r["accuracy"]["value"])["temperature"]
            paper_best = max(paper, key=lambda t: paper[t]["accuracy"])
            self.differences.append(
                f"Temperature: the paper's best T is {paper_best:g}; ours is T = {best_val:g} chosen on val "
                f"(T = {best_test:g} on test) among {', '.join(format(r['temperature'], 'g') for r in test)}.")
        return blocks

    def table_4(self, zoo: dict) -> list:
        blocks: list = []
        paper = paper_rows("table_4")
        rows, ours_points, paper_points = [], {}, {}
        computation = {m: v["computation"] for m, v in paper_rows("table_1").items()}
        for model, entry in zoo["models"].items():
            test = at_half(entry["test"])
            accuracy = test["metrics"]["accuracy"] if test else None
            loss = test["metrics"]["loss"]["value"] if test else None
            p = paper.get(model, {})
            rows.append([model, str(entry["input_size"]), interval_pct(accuracy) if accuracy else "",
                         num(p.get("accuracy"), 3), num(loss, 4), num(p.get("loss"), 3), num(entry["gflops"], 3),
                         num(entry["train_seconds"], 0)])
            if accuracy:
                ours_points[model] = (entry["gflops"], accuracy["value"])
            if p:
                paper_points[model] = (2 * computation[model] / 1000, p["accuracy"] / 100)
        blocks.append(Table(["model", "input px", "accuracy % (ours)", "accuracy % (paper)", "loss (ours)",
                             "loss (paper)", "GFLOPs (ours)", "training s (ours)"], rows,
                            "Test split, threshold 0.5, one seed; 95 % patient-bootstrap intervals"))
        blocks.append(Figure(plot_accuracy_against_cost(ours_points, paper_points, self.figures / "cost.png"),
                             "Test accuracy against GFLOPs per image: ours at the size trained (filled), the paper's "
                             "at its own sizes (hollow; its computation column × 2)."))
        ours_order = sorted(ours_points, key=lambda m: -ours_points[m][1])
        paper_order = sorted((m for m in paper if m in zoo["models"]), key=lambda m: -paper[m]["accuracy"])
        self.differences.append(f"Architectures by test accuracy: paper {' > '.join(paper_order)}; ours "
                                f"{' > '.join(ours_order)} (brief training, one seed: a ranking within the "
                                f"intervals above is not established).")
        return blocks

    def table_1(self, models: dict) -> list:
        blocks: list = []
        paper = paper_rows("table_1")
        rows = []
        for summary in models["models"]:
            p = paper.get(summary["name"], {})
            rows.append([summary["name"], str(summary["input_size"]), num(summary["params_m"], 2),
                         num(p.get("params"), 2), str(summary["weight_layers"]), str(p.get("depth", "")),
                         num(1000 * summary["gmacs"], 0), num(p.get("computation"), 0), num(p.get("top1_error"), 2)])
        blocks.append(Table(["model", "input px", "params M (ours)", "params M (paper)", "weight layers (ours)",
                             "depth (paper)", "M multiply-adds (ours)", "computation M (paper)",
                             "ImageNet top-1 error % (paper; not measured)"], rows,
                            "Ours: the 2-class models at their own input size; multiply-adds = FLOPs / 2"))
        self.differences.append(
            "Table I: our parameter counts are of 2-class models (the paper's and torchvision's are 1000-class "
            "ImageNet models), and our depth counts weight layers; the paper's depth follows no rule we could "
            "reproduce.")
        return blocks

    def table_5(self, profile: dict) -> list:
        blocks: list = []
        paper = paper_rows("table_5")
        arch = {"teacher": "inception_v3", "student": "alexnet"}
        rows, measured = [], {}
        for role, p in profile["profiles"].items():
            memory = p.get("cuda_train_reserved_mb") or p.get("peak_rss_train_mb")
            kind = "CUDA reserved" if p.get("cuda_train_reserved_mb") else "CPU peak RSS"
            hours = self.results.get(role, {}).get("train_seconds", math.nan) / 3600
            measured[role] = (memory, hours)
            printed = paper.get(arch[role], {})
            rows.append([f"{self.labels[role]} @ {p['input_size']} px", f"{num(memory / 1000 if memory else None, 2)} "
                         f"({kind})", num(printed.get("gpu_memory_gb"), 2), num(p.get("gpu_util_mean"), 1),
                         num(printed.get("gpu_utilization"), 2), num(hours, 3), num(printed.get("training_hours"), 2),
                         num(p["latency_ms_median"], 2), num(p["train_images_per_s"], 1)])
        blocks.append(Table(["model", "memory GB (ours)", "GPU memory GB (paper)", "GPU utilisation % (ours)",
                             "GPU utilisation % (paper)", "training h (ours, first seed)", "training h (paper)",
                             "latency batch 1 ms (ours)", "training images/s (ours)"], rows,
                            f"Measured on {profile['profiles']['student']['device_name']} "
                            f"({profile['profiles']['student']['device']}); GPU utilisation only on CUDA"))
        if len(measured) == 2 and all(measured["student"]):
            teacher, student = paper["inception_v3"], paper["alexnet"]
            self.differences.append(
                f"Cost of the teacher over the student: memory {measured['teacher'][0] / measured['student'][0]:.2f}x "
                f"(paper {teacher['gpu_memory_gb'] / student['gpu_memory_gb']:.2f}x), training time "
                f"{measured['teacher'][1] / measured['student'][1]:.2f}x (paper "
                f"{teacher['training_hours'] / student['training_hours']:.1f}x) — on "
                f"{profile['profiles']['student']['device']} at our input sizes, not the paper's GPU.")
        return blocks

    def external_sets(self, external: dict) -> list:
        blocks: list = []
        if not external["sets"]:
            return [Paragraph("No external set was given (reproduce --external DIR).")]
        for entry in external["sets"]:
            rows = []
            for run in entry["runs"]:
                for result in run["results"]:
                    rows.append([self.labels.get(run["role"], run["role"]), str(run["seed"]),
                                 f"{result['rule']} ({result['threshold']:.3g})",
                                 *(interval_pct(result["metrics"][m]) for m in MAIN_METRICS),
                                 num(result["metrics"]["roc_auc"]["value"], 3)])
            blocks += [Heading(f"{entry['name']} ({entry['images']} images, {entry['patients']} patients; "
                               f"{entry['by_class']})", 3),
                       Table(["model", "seed", "threshold", "accuracy %", "specificity %", "sensitivity %",
                              "ROC AUC"], rows, f"{entry['folder']}: 95 % patient-bootstrap intervals; never "
                                                "trained on, never used to choose anything")]
        return blocks

    def audit(self, audit: dict) -> list:
        blocks: list = []
        patients = audit["patients"]
        rows = [[split, str(counts.get("NORMAL", 0)), str(counts.get("PNEUMONIA", 0)),
                 str(patients.get(split, {}).get("NORMAL", "")), str(patients.get(split, {}).get("PNEUMONIA", ""))]
                for split, counts in audit["counts"].items()]
        blocks.append(Table(["folder", "NORMAL images", "PNEUMONIA images", "NORMAL patients", "PNEUMONIA patients"],
                            rows, f"{audit['root']}"))
        paper = paper_rows("table_3")
        blocks.append(Table(["split", "NORMAL", "PNEUMONIA"],
                            [[s, str(v["NORMAL"]), str(v["PNEUMONIA"])] for s, v in paper.items()],
                            "The paper's Table III"))
        blocks.append(Bullets([
            f"unreadable files: {len(audit['unreadable'])}; non-image files: {len(audit['non_image_files'])}",
            f"exact duplicate groups: {len(audit['exact_duplicates'])}; near-duplicate groups: "
            f"{len(audit['near_duplicates'])}",
            f"patients in more than one split folder: {len(audit['patients_in_several_splits'])}",
            f"image sizes: {audit['size_stats']}; modes: {audit['modes']}",
        ]))
        splits = self.results.get("student", {})
        if splits:
            used = {name: at_half(splits[name]) for name in ("val", "test") if splits.get(name)}
            blocks.append(Paragraph("Evaluation splits used (patient-wise, from data.split_seed): " + "; ".join(
                f"{name} {entry['count']} images of {entry['patients']} patients" for name, entry in used.items()
                if entry)))
        total = sum(sum(c.values()) for c in audit["counts"].values())
        self.differences.append(f"Data: {total} images in {audit['root']} against the paper's "
                                f"{sum(sum(v.values()) for v in paper.values())} (its Table III); our test split is "
                                f"carved from the training folder by patient unless the root has a test/ folder.")
        return blocks

    def configs(self) -> list:
        blocks: list = [Heading("Configs")]
        blocks.append(Code(yaml.safe_dump(self.plan, sort_keys=False), "yaml", "the plan"))
        for role in ROLE_NAMES:
            config = self.role_config(role)
            if config is not None:
                blocks.append(Code(yaml.safe_dump(config, sort_keys=False), "yaml", f"{role} (first seed)"))
        self.setting_differences()
        return blocks

    def setting_differences(self) -> None:
        for role, name in (("teacher", "paper/teacher"), ("student", "paper/student")):
            ours = self.role_config(role)
            if ours is None:
                continue
            paper = preset(name)
            size = ours["data"]["image_size"] or input_size(ModelConfig(name=ours["model"]["name"]))
            self.differences.append(
                f"{role} recipe: ours {ours['model']['name']} at {size} px, init {ours['model']['init']}, "
                f"{ours['train']['epochs']} epochs, lr {ours['train']['lr']}; the paper's {paper.model.name} at "
                f"{input_size(paper.model, paper.data.image_size)} px, init {paper.model.init}, lr {paper.train.lr} "
                f"(preset {name}).")

    def environment_section(self) -> list:
        env = self.environment
        machine = env.get("machine", {})
        rows = [[k, str(v)] for k, v in {**env.get("versions", {}), **machine, "git": env.get("git")}.items()]
        return [Heading("Versions and device"), Table(["item", "value"], rows,
                                                      "Where the report was last rebuilt; each step's device is in "
                                                      "the steps table")]


def write_report(out: str | Path) -> tuple[Path, Path]:
    """Build the report of the study in ``out``; returns the Markdown and the HTML paths."""
    report = StudyReport(Path(out))
    document = report.build()
    report.report_dir.mkdir(parents=True, exist_ok=True)
    markdown = atomic_write_text(report.report_dir / "REPORT.md", render_markdown(document, report.report_dir))
    html = atomic_write_text(report.report_dir / "REPORT.html", render_html(document))
    return markdown, html
