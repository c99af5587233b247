"""The service's page in headless Chromium: choose an X-ray, see the probability, the label and a heat map."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_server import serving

from cxrdistill.deployment.predict import predict_files

pytest.importorskip("fastapi", reason="the service is the optional 'serve' extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page test drives Chromium with Playwright")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _film(path: Path) -> Path:
    """A chest-film-like grey image: dark lungs, brighter mediastinum, noise."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :80]
    film = 60 + 120 * np.exp(-((xx - 40) / 12.0) ** 2) + rng.normal(0, 15, (96, 80))
    Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(path)
    return path


@contextmanager
def service_page(checkpoint: Path) -> Iterator[sync_api.Page]:
    """The upload page of a service for ``checkpoint`` in headless Chromium, once it has loaded the model's id."""
    from cxrdistill.deployment.service import create_app

    with serving(create_app(checkpoint)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Model')")
            yield page
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium); .ci/run installs it")
def test_upload_through_the_page_shows_probability_and_heat_map(small_checkpoint: Path, tmp_path: Path) -> None:
    image = _film(tmp_path / "chest.png")
    with service_page(small_checkpoint) as page:
        page.set_input_files("#file", str(image))
        heatmap = page.locator("#heatmap")
        heatmap.wait_for(state="visible", timeout=60_000)
        page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0")
        probability = float(page.text_content("#probability"))
        label = page.text_content("#label")
        box = heatmap.bounding_box()
        screenshot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    assert 0.0 <= probability <= 1.0 and label == ("PNEUMONIA" if probability >= 0.5 else "NORMAL")
    assert page_error_free(screenshot)
    region = screenshot[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
    assert region.shape[0] > 100 and region.shape[1] > 80  # drawn large enough to see
    colourful = (region.max(axis=2) - region.min(axis=2)) > 40  # grey pixels have R = G = B
    assert colourful.mean() > 0.02, colourful.mean()  # the heat map is drawn in colour over the grey film


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium); .ci/run installs it")
def test_the_page_warns_when_an_image_is_not_like_the_training_images(ood_checkpoint: Path, synth_root: Path,
                                                                      tmp_path: Path) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 64), dtype=np.uint8)).save(noise)
    # A film the check itself does not flag (the threshold is the 99th percentile of val, so a few
    # training-like films lie above it): the page must show its label without the warning.
    films = sorted((synth_root / "train").rglob("*.jpeg"))[:20]
    chest = next(Path(row.file) for row in predict_files(ood_checkpoint, films) if row.ood_flag is False)
    seen = {}
    with service_page(ood_checkpoint) as page:
        for name, image in (("noise", noise), ("chest", chest)):
            page.set_input_files("#file", str(image))
            page.wait_for_function(f"document.getElementById('status').textContent === {image.name!r}")
            seen[name] = (page.is_visible("#ood-warning"), page.text_content("#label"),
                          page.text_content("#ood-warning"))
    visible, label, warning = seen["noise"]
    assert visible and "not like the training images" in warning
    assert label in ("NORMAL (not like the training images)", "PNEUMONIA (not like the training images)")
    visible, label, _ = seen["chest"]
    assert not visible and label in ("NORMAL", "PNEUMONIA")


def page_error_free(screenshot: np.ndarray) -> bool:
    """Not blank: a white page with text and an image has many distinct grey levels."""
    return screenshot.std() > 10 and len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 50
