"""``reproduce``: the whole study on a tiny synthetic set, its report (Markdown, HTML, rendered), resumability."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdistill.models import model_spec
from cxrdistill.paper.report.study import seeds_pct
from cxrdistill.paper.reproduce import STEPS, reproduce
from cxrdistill.paper.tables import beside_table_1, paper_rows, paper_temperatures

TINY = ["model.name=resnet18", "data.image_size=32", "data.batch_size=8", "data.num_workers=0", "train.epochs=1",
        "train.threads=1", "evaluation.n_bootstrap=20"]
TINY_PLAN = ["seeds=[0, 1]", "temperatures=[1]", "zoo.models={resnet18: demo/student}", "zoo.overrides=[]",
             "profile.isolate=false", "profile.repeats=1", "profile.train_steps=1", "profile.batch_size=2"]
FIGURES = ("roc.png", "training_curves.png", "temperature.png", "cost.png")


@pytest.fixture(scope="module")
def study(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("reproduce")
    external = Path(shutil.copytree(synth_root / "test", work / "external_a"))
    overrides = [*TINY, f"data.cache_dir={work / 'cache'}"]
    first = reproduce("demo", synth_root, work / "study", [external], overrides, TINY_PLAN, progress=False)
    markers = {p.name: p.read_text() for p in (work / "study" / "steps").glob("*.json")}
    second = reproduce("demo", synth_root, work / "study", [external], overrides, TINY_PLAN, progress=False)
    return {"first": first, "second": second, "markers": markers, "work": work, "external": external,
            "overrides": overrides}


@pytest.mark.slow
def test_every_step_runs_once_then_is_skipped(study):
    assert study["first"].of("ran") == list(STEPS)
    assert study["second"].of("skipped") == list(STEPS) and not study["second"].of("ran")
    out = study["first"].out
    assert {p.name: p.read_text() for p in (out / "steps").glob("*.json")} == study["markers"]  # not rewritten
    assert all(json.loads(text)["wall_s"] > 0 for text in study["markers"].values())


@pytest.mark.slow
def test_a_changed_setting_reruns_only_the_steps_it_touches(study, synth_root):
    plan = [*TINY_PLAN, "profile.repeats=2"]
    again = reproduce("demo", synth_root, study["first"].out, [study["external"]], study["overrides"], plan,
                      progress=False)
    assert again.of("ran") == ["profile"]


@pytest.mark.slow
def test_report_holds_every_table_and_plot_beside_the_papers_figures(study):
    markdown = study["first"].report_markdown.read_text()
    for heading in ("Table VI", "Table II", "Table IV", "Table I ", "Table V ", "External sets", "Data audit",
                    "Differences from the paper", "Configs", "Versions and device"):
        assert heading in markdown, heading
    assert "has not finished" not in markdown
    walls = [json.loads(p.read_text())["wall_s"] for p in (study["first"].out / "steps").glob("*.json")]
    total = re.search(rf"\| all steps \| {len(STEPS)} of {len(STEPS)} done \| ([\d.]+) \(([\d.]+) min\)", markdown)
    assert total and float(total[1]) == pytest.approx(sum(walls), abs=0.06), "the steps' total wall time"
    # the paper's figures come from the data file, printed beside ours
    assert f"{paper_rows('table_6')['student_kd']['accuracy']:.2f}" in markdown
    assert f"{paper_rows('table_2')[10]['specificity']:.2f}" in markdown
    assert "external_a" in markdown
    assert re.search(r"Distillation gain in accuracy: paper \+4\.14 points, ours [+-]\d", markdown)
    figures = study["first"].out / "report" / "figures"
    for name in FIGURES:
        assert (figures / name).stat().st_size > 5000, name
        assert f"figures/{name}" in markdown
    page = study["first"].report_html.read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r"(src|href)=\"https?:", page)  # self-contained: no CDN, no external file
    assert page.count("<table>") >= 8


def test_seed_intervals_stay_within_a_proportions_bounds():
    """Three seeds with a wide spread: the t-interval would reach 129.56 %; the table stops at 100."""
    assert seeds_pct(0.7993, 0.1998, 3) == "79.93 ± 19.98 [30.30, 100.00]"
    assert seeds_pct(0.10, 0.10, 3).endswith("[0.00, 34.84]")
    assert seeds_pct(0.90, 0.01, 3) == "90.00 ± 1.00 [87.52, 92.48]"  # inside the bounds: untouched


def non_white_share(pixels: np.ndarray) -> float:
    return float((pixels.min(axis=2) < 200).mean())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary")
def test_html_report_renders_tables_and_plots_in_chromium(study, tmp_path):
    screenshot = tmp_path / "report.png"
    width, height = 1280, 9000
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={screenshot}",
                    study["first"].report_html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (height, width)
    top = pixels[:1500]
    assert 0.01 < non_white_share(top) < 0.6  # text and table rules, not blank, not a black page
    # table header cells are shaded #e8eef6; plots hold saturated matplotlib colours (C0 blue, C1 orange)
    assert ((top[..., 0] == 0xE8) & (top[..., 1] == 0xEE) & (top[..., 2] == 0xF6)).sum() > 500
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    rows_with_colour = np.flatnonzero((saturation > 80).sum(axis=1) > 20)
    assert rows_with_colour.size > 60  # coloured lines, markers and legends of the plots
    assert rows_with_colour.max() - rows_with_colour.min() > 1500  # spread down the page: more than one plot


def test_plans_are_validated_with_clear_errors(tmp_path):
    from cxrdistill.config import ConfigError
    from cxrdistill.paper.reproduce import load_plan

    for name in ("demo", "cpu", "paper"):
        plan = load_plan(name)
        assert plan.name == name and set(plan.steps) == set(STEPS) and plan.zoo.models
    with pytest.raises(ConfigError, match="'nope' is neither a file nor a reproduce preset; presets: cpu, demo, paper"):
        load_plan("nope")
    with pytest.raises(ConfigError, match="unknown step 'tabel6'"):
        load_plan("demo", ["steps=[audit, tabel6]"])
    with pytest.raises(ConfigError, match="unknown key 'seed'"):
        load_plan("demo", ["seed=[0]"])


def test_the_papers_tables_sit_beside_the_library_not_in_it():
    """Table I reaches ``cxrdistill models`` through the study's tables; the sweep's default is Table II's T."""
    assert paper_temperatures() == tuple(float(t) for t in paper_rows("table_2")) == (1, 10, 20, 30, 40, 50)
    alexnet = beside_table_1({"name": "alexnet", "params_m": 57.0})
    assert alexnet["paper_params_m"] == 64.90 and alexnet["paper_depth"] == 8 and alexnet["params_m"] == 57.0
    assert beside_table_1({"name": "mobilenet_v3_small"})["paper_computation_m"] is None
    assert not hasattr(model_spec("alexnet"), "paper")
