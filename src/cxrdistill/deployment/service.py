"""A small web service around one student: upload a chest X-ray, get the probability, label and heat map.

``create_app(model_path, ...)`` builds the FastAPI app (the model is loaded once, here); ``serve`` runs it
with uvicorn, bound to 127.0.0.1 unless told otherwise: the service has no authentication and is meant for
one workstation or a trusted network. Endpoints:

* ``POST /predict`` — multipart upload (field ``file``) of a JPEG, PNG or DICOM; ``?heatmap=true`` adds a
  Grad-CAM overlay as a base64 PNG. Answers ``{"probability", "label", "threshold", "threshold_rule", "model"}``,
  and, when the model has a fitted out-of-distribution check, ``"ood": {"score", "threshold", "flagged", "message"}``
  (``flagged``: the image is not like the training images; its label is still given).
* ``GET /health`` — the model's id and settings, with the threshold in use and why.
* ``GET /`` — a self-contained page (no external scripts) to choose or drop an image and see the result.

Uploads never touch the file system: the body is read into memory up to ``max_upload_bytes`` (a larger
``Content-Length`` is refused with 413 before anything is read; a chunked body is cut off at the limit),
parsed in memory with python-multipart, and decoded from memory; the client's file name is never used.
Images over the pixel limit (:data:`cxrdistill.data.io.MAX_IMAGE_PIXELS`) are refused from their header.
Every bad input gets a 4xx answer ``{"error": "..."}`` and the service keeps serving. Parsing, decoding and
inference run in a worker thread, inference one request at a time (a lock): Grad-CAM hooks the shared model.

Needs the ``serve`` extra: ``pip install 'cxrdistill[serve]'``.
"""

from __future__ import annotations

import base64
import io
import threading
from importlib import resources
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from python_multipart.multipart import FormParser, parse_options_header
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("the web service needs the 'serve' extra: pip install 'cxrdistill[serve]'") from error

from cxrdistill.data.io import ImageTooLargeError, UnreadableImageError, decode_grey
from cxrdistill.deployment.heatmap import overlay, png_bytes
from cxrdistill.deployment.ood import FLAG_TEXT
from cxrdistill.deployment.predict import Predictor
from cxrdistill.errors import CxrDistillError

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
"""An uncompressed 16-bit DICOM from a 43 x 43 cm detector at 100 um is about 37 MB."""


class UploadError(CxrDistillError, ValueError):
    """A request the service refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"upload of {int(declared):,} bytes is over the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"upload is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _uploaded_file(body: bytes, content_type: str | None) -> bytes:
    """The first file of a multipart/form-data body, parsed in memory (its file name is ignored)."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(415, "send the image as multipart/form-data with a field 'file'")
    files: list[Any] = []
    try:  # the parser refuses some boundaries (over 256 bytes) when it is made, others while parsing
        parser = FormParser("multipart/form-data", on_field=None, on_file=files.append, boundary=options[b"boundary"],
                            config={"MAX_MEMORY_FILE_SIZE": float("inf")})  # never spooled to a temporary file
        parser.write(body)
        parser.finalize()
    except Exception as error:  # python-multipart raises several kinds for malformed bodies
        raise UploadError(400, f"malformed multipart body ({error})") from error
    if not files:
        raise UploadError(400, "no file in the upload: send the image as multipart/form-data field 'file'")
    stream = files[0].file_object
    stream.seek(0)
    return stream.read()


def _page() -> str:
    return resources.files("cxrdistill.deployment").joinpath("page.html").read_text(encoding="utf-8")


def create_app(model_path: str | Path, checkpoint: str | Path | None = None, threshold: float | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, operating_point: str = "default") -> FastAPI:
    """The service for one model (checkpoint or ONNX; ``checkpoint`` adds heat maps to an ONNX model)."""
    predictor = Predictor(model_path, threshold, checkpoint, operating_point)
    model_lock = threading.Lock()
    app = FastAPI(title="cxrdistill", summary="Pneumonia probability for a chest X-ray. Research software.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # the interactive docs load scripts from a CDN

    def classify(body: bytes, content_type: str | None, heatmap: bool) -> dict[str, Any]:
        grey = decode_grey(io.BytesIO(_uploaded_file(body, content_type)), "upload")
        inputs = predictor.model_input(grey).unsqueeze(0)
        with model_lock:
            probabilities, scores = predictor.assess(inputs)
            cam = predictor.heatmaps(inputs)[0] if heatmap else None
        probability, score = probabilities[0], scores[0]
        answer: dict[str, Any] = {"probability": probability, "label": predictor.label(probability),
                                  "threshold": predictor.threshold, "threshold_rule": predictor.threshold_in_use.rule,
                                  "model": predictor.model_id}
        if score is not None:
            flagged = bool(predictor.is_unfamiliar(score))
            answer["ood"] = {"score": score, "threshold": predictor.ood_threshold, "flagged": flagged,
                             "message": FLAG_TEXT if flagged else "like the training images"}
        if cam is not None:
            answer["heatmap_png"] = base64.b64encode(png_bytes(overlay(grey, cam))).decode("ascii")
        return answer

    @app.post("/predict")
    async def predict(request: Request, heatmap: bool = False) -> dict[str, Any]:
        if heatmap:
            predictor.require_heatmaps()
        body = await _read_body(request, max_upload_bytes)
        # Parsing and decoding run in the worker thread too: a large upload must not stall the event loop.
        return await run_in_threadpool(classify, body, request.headers.get("content-type"), heatmap)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.model_id, "architecture": predictor.metadata.get("architecture"),
                "input_size": predictor.input_size, "threshold": predictor.threshold,
                "threshold_rule": predictor.threshold_in_use.rule,
                "threshold_reason": predictor.threshold_in_use.reason,
                "heatmaps": predictor.has_heatmaps, "max_upload_bytes": max_upload_bytes,
                "ood_threshold": predictor.ood_threshold}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _page()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(UnreadableImageError)
    async def unreadable(request: Request, exc: UnreadableImageError) -> JSONResponse:
        return error(413 if isinstance(exc, ImageTooLargeError) else 400, f"unreadable image: {exc.reason}")

    @app.exception_handler(CxrDistillError)
    async def bad_request(request: Request, exc: CxrDistillError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    return app


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, checkpoint: str | Path | None = None,
          threshold: float | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
          operating_point: str = "default") -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model_path, checkpoint, threshold, max_upload_bytes, operating_point), host=host, port=port,
                log_level="info")
