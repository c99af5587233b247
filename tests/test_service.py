"""The web service through a real HTTP client against a real uvicorn server: answers, limits and bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
from pathlib import Path

import numpy as np
import pytest
from image_files import png_claiming, write_dicom
from PIL import Image
from service_server import serving

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the service is the optional 'serve' extra")

from cxrdistill.deployment.predict import predict_files  # noqa: E402
from cxrdistill.deployment.service import create_app  # noqa: E402


def _png(shape=(80, 64), seed=0, dtype=np.uint8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, data: bytes, name: str = "x.png", **params) -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"file": (name, data, "application/octet-stream")}, params=params,
                      timeout=60)


@pytest.fixture(scope="module")
def service(small_checkpoint: Path):
    with serving(create_app(small_checkpoint)) as url:
        yield url


def test_health_names_the_model_by_file_and_hash(service: str, small_checkpoint: Path) -> None:
    health = httpx.get(f"{service}/health").json()
    digest = hashlib.sha256(small_checkpoint.read_bytes()).hexdigest()[:12]
    assert health["status"] == "ok" and health["model"] == f"student.safetensors@sha256:{digest}"
    assert health["heatmaps"] is True and health["input_size"] == 64 and health["threshold"] == 0.5


def test_page_is_self_contained(service: str) -> None:
    page = httpx.get(service)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "http://" not in page.text and "https://" not in page.text


def test_prediction_matches_the_file_path_for_png_and_dicom(service: str, small_checkpoint: Path,
                                                            tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(_png(dtype=np.uint16))
    stored = np.random.default_rng(1).integers(0, 4096, (70, 60)).astype(np.uint16)
    dicom = write_dicom(tmp_path / "IM0001", stored, bits_stored=12, window=(2048, 3000))
    expected = predict_files(small_checkpoint, [png, dicom])
    for path, offline in zip([png, dicom], expected, strict=True):
        answer = _post(service, path.read_bytes(), name="whatever.bin")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["probability"] == pytest.approx(offline.prob_pneumonia, abs=1e-5)
        assert body["label"] == offline.predicted and body["threshold"] == 0.5
        assert body["model"].startswith("student.safetensors@sha256:") and "heatmap_png" not in body


def test_heatmap_is_a_png_overlay_at_the_image_aspect(service: str) -> None:
    body = _post(service, _png(shape=(80, 64)), heatmap="true").json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == (64, 80)


def test_bad_input_gets_a_json_error_and_the_service_keeps_serving(service: str, tmp_path: Path) -> None:
    no_pixels = write_dicom(tmp_path / "sr.dcm", np.zeros((8, 8), np.uint16), pixel_data=False).read_bytes()
    cases = [
        (b"just some text", 400, "not an image file"),
        (_png()[:200], 400, "corrupt or truncated"),
        (png_claiming(30000, 30000), 413, "limit"),
        (no_pixels, 400, "no pixel data"),
    ]
    for data, status, message in cases:
        answer = _post(service, data)
        assert answer.status_code == status and message in answer.json()["error"], answer.text
    not_multipart = httpx.post(f"{service}/predict", content=_png(), headers={"content-type": "image/png"})
    assert not_multipart.status_code == 415 and "multipart" in not_multipart.json()["error"]
    long_boundary = httpx.post(f"{service}/predict", content=_png(),  # python-multipart refuses it on construction
                               headers={"content-type": "multipart/form-data; boundary=" + "b" * 300})
    assert long_boundary.status_code == 400 and "malformed multipart" in long_boundary.json()["error"]
    no_file = httpx.post(f"{service}/predict", data={"note": "no image"}, files={})
    assert no_file.status_code in (400, 415) and "error" in no_file.json()
    bad_flag = httpx.post(f"{service}/predict", params={"heatmap": "perhaps"}, files={"file": ("x", _png())})
    assert bad_flag.status_code == 422 and "heatmap" in bad_flag.json()["error"]
    assert httpx.get(f"{service}/health").json()["status"] == "ok"
    assert _post(service, _png()).status_code == 200


def test_declared_oversize_upload_is_refused_before_its_body_is_read(service: str) -> None:
    host, port = service.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        # Announce 100 MB (over the 64 MiB default) but send 1 kB: an answer proves nothing waited for the rest.
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b"
                           b"\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
        reply = b""
        while b"over the limit" not in reply and (chunk := connection.recv(65536)):  # headers and body may come apart
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"over the limit" in reply


def test_streamed_upload_is_cut_off_at_the_limit(small_checkpoint: Path) -> None:
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"
        for _ in range(16):
            yield b"\0" * 1024

    with serving(create_app(small_checkpoint, max_upload_bytes=4096)) as url:
        answer = httpx.post(f"{url}/predict", content=chunks(),
                            headers={"content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in answer.request.headers  # chunked: only counting can stop it
        assert answer.status_code == 413 and "limit" in answer.json()["error"]
        assert _post(url, _png(shape=(40, 40))).status_code == 200  # 4 kB is enough for a small PNG


def test_onnx_model_serves_and_says_why_it_has_no_heatmaps(small_onnx: Path, small_checkpoint: Path) -> None:
    with serving(create_app(small_onnx)) as url:
        assert httpx.get(f"{url}/health").json()["heatmaps"] is False
        assert _post(url, _png()).status_code == 200
        refused = _post(url, _png(), heatmap="true")
        assert refused.status_code == 400 and "checkpoint" in refused.json()["error"]
    with serving(create_app(small_onnx, checkpoint=small_checkpoint)) as url:
        assert "heatmap_png" in _post(url, _png(), heatmap="true").json()


def test_serve_command_binds_to_loopback_by_default() -> None:
    from typer.testing import CliRunner

    from cxrdistill.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "127.0.0.1" in result.output and "--max-upload-mb" in result.output
