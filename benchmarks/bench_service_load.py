"""The web service under load and attack: a bounded load test of a real ``cxrdistill serve`` from another process.

The server is started as a subprocess (``python -m cxrdistill serve``) on 127.0.0.1 at a free port, in a
scratch folder, with a freshly initialised MobileNetV3-Small (or AlexNet) checkpoint at 64 px written here,
or ``--model PATH``. An asyncio client (httpx) keeps ``--concurrency`` requests in flight for ``--warmup``
then ``--duration`` seconds. A seeded schedule (one of each kind first, then weighted draws) mixes valid
uploads (grey JPEG, 8- and 16-bit PNG and 12-bit DICOM of several sizes, a heat-map request, GET /health)
with bad and hostile ones: an upload over the server's limit, a truncated JPEG, bytes that are no image,
decompression-bomb PNG and DICOM files (tiny files whose headers claim 30000 x 30000 pixels), an empty
file, an empty body, a raw non-multipart body, a multipart body whose boundary is over python-multipart's
length limit, and valid images sent under path-traversal file names carrying a unique marker
(``../../MARKER``, ``TEMPDIR/MARKER`` absolute, ...). Every kind has one expected status; anything else (another
status, a transport error, a timeout) is unexpected.

Reported: requests, requests/s and latency percentiles (p50/p99, overall and per kind) of the timed
phase; unexpected answers and 5xx over both phases; the server's resident memory (``VmRSS``) at start,
after the warm-up and at the end, sampled every half second between, so that a leak shows as growth over
the timed phase (``drift_mb``: the median of its last third of samples minus that of its first third);
tracebacks in the server's log; and files named after the marker anywhere a traversal name could point.
The script exits non-zero on any 5xx, unexpected answer, server traceback or marker file, on a kind never
sent, or on a server that stops answering.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from _common import parse, parser, write_result
from PIL import Image
from rich.console import Console
from rich.table import Table

import cxrdistill
from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint

NAME = "service_load"
ARCHITECTURES = ("mobilenet_v3_small", "alexnet")
REQUEST_TIMEOUT_S = 60.0
"""A request still unanswered after this long counts as a hang (an unexpected answer)."""


@dataclass(frozen=True)
class Kind:
    """One kind of request: its variants (body, file name), the status it must get, and its share of the mix."""

    name: str
    expected: int
    weight: int
    variants: tuple[tuple[bytes, str], ...] = ()
    method: str = "upload"
    """``upload`` (multipart field ``file``), ``raw`` (the bytes as the whole body), ``empty`` or ``health``."""
    params: tuple[tuple[str, str], ...] = ()


def grey_image(height: int, width: int, seed: int, dtype: type = np.uint8) -> np.ndarray:
    """A radiograph-like grey image: a smooth gradient under noise, so that JPEG and PNG sizes are realistic."""
    rows, columns = np.mgrid[0:height, 0:width]
    top = np.iinfo(dtype).max
    smooth = (np.sin(rows / max(height, 1) * 3) + np.cos(columns / max(width, 1) * 2) + 2) / 4
    noise = np.random.default_rng(seed).normal(0, 0.05, (height, width))
    return np.clip((smooth + noise) * top, 0, top).astype(dtype)


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def dicom_bytes(stored: np.ndarray, bits_stored: int = 12, claimed: tuple[int, int] | None = None) -> bytes:
    """A single-frame 16-bit DX DICOM with ``bits_stored`` significant bits and a window over them;
    ``claimed`` overrides the (rows, columns) of its header."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.SamplesPerPixel, dataset.PhotometricInterpretation = "DX", 1, "MONOCHROME2"
    dataset.Rows, dataset.Columns = claimed or stored.shape
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
    dataset.PixelRepresentation = 0
    dataset.WindowCenter, dataset.WindowWidth = 2 ** (bits_stored - 1), 2**bits_stored
    dataset.PixelData = stored.astype("<u2").tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims ``width`` x ``height`` pixels (with a valid checksum)."""
    import struct
    import zlib

    data = bytearray(encoded(np.zeros((1, 1), np.uint8), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def traversal_names(marker: str) -> tuple[str, ...]:
    """Upload file names that would write ``marker`` outside any upload folder if a server used them."""
    return (f"../../{marker}", f"{tempfile.gettempdir()}/{marker}", f"..\\..\\{marker}", f"....//....//{marker}",
            f"%2e%2e%2f%2e%2e%2f{marker}", f"./{marker}")


def request_kinds(max_upload_bytes: int, marker: str, heatmaps: bool, quick: bool) -> list[Kind]:
    """Every kind of request, with its bodies built once (sizes capped in ``quick`` mode)."""
    sizes = [(64, 64), (300, 256), (1024, 880)] + ([] if quick else [(1800, 1500)])
    jpegs = tuple((encoded(grey_image(h, w, i), "JPEG"), f"chest{i}.jpeg") for i, (h, w) in enumerate(sizes))
    pngs = tuple((encoded(grey_image(h, w, i, np.uint16 if i in (1, 2) else np.uint8), "PNG"), f"chest{i}.png")
                 for i, (h, w) in enumerate(sizes))
    dicoms = tuple((dicom_bytes(grey_image(h, w, i, np.uint16) >> 4), f"IM{i:04d}")
                   for i, (h, w) in enumerate(sizes[:3]))
    png = pngs[1][0]
    largest = max(len(data) for data, _ in jpegs + pngs + dicoms)
    if largest + 1024 > max_upload_bytes:
        raise ValueError(f"an upload limit of {max_upload_bytes:,} bytes refuses the valid uploads too (the largest "
                         f"is {largest:,} bytes): raise --max-upload-mb")
    over = os.urandom(1024) * (max_upload_bytes // 1024 + 2)
    return [
        Kind("health", 200, 2, method="health"),
        Kind("jpeg", 200, 6, jpegs),
        Kind("png", 200, 6, pngs),
        Kind("dicom", 200, 4, dicoms),
        Kind("png_heatmap", 200 if heatmaps else 400, 2, pngs[:2], params=(("heatmap", "true"),)),
        Kind("path_traversal", 200, 2, tuple((png, name) for name in traversal_names(marker))),
        Kind("oversized", 413, 1, ((over, "big.png"),)),
        Kind("bomb_png", 413, 1, ((bomb_png(30000, 30000), "bomb.png"),)),
        Kind("bomb_dicom", 413, 1, ((dicom_bytes(np.zeros((8, 8), np.uint16), claimed=(30000, 30000)), "IM9999"),)),
        Kind("truncated_jpeg", 400, 1, tuple((data[: len(data) // 2], name) for data, name in jpegs)),
        Kind("not_image", 400, 1, ((b"%PDF-1.4 this is not an image\n" * 20, "report.pdf"),
                                   (os.urandom(4096), "noise.jpeg"))),
        Kind("empty_file", 400, 1, ((b"", "empty.png"),)),
        Kind("empty_body", 400, 1, method="empty"),
        Kind("not_multipart", 415, 1, ((png, "image/png"),), method="raw"),
        Kind("long_boundary", 400, 1, ((png, "multipart/form-data; boundary=" + "b" * 300),), method="raw"),
    ]


def schedule(kinds: list[Kind], seed: int) -> Iterator[tuple[Kind, int]]:
    """(kind, variant index) forever: each kind once in a seeded order, then weighted seeded draws."""
    rng = random.Random(seed)
    first = rng.sample(kinds, len(kinds))
    weights = [kind.weight for kind in kinds]
    seen: Counter[str] = Counter()
    while True:
        kind = first.pop() if first else rng.choices(kinds, weights)[0]
        yield kind, seen[kind.name] % max(len(kind.variants), 1)
        seen[kind.name] += 1


async def send(client: httpx.AsyncClient, kind: Kind, variant: int) -> httpx.Response:
    if kind.method == "health":
        return await client.get("/health")
    if kind.method == "empty":
        return await client.post("/predict", content=b"", headers={"content-type": "multipart/form-data; boundary=b"})
    data, name = kind.variants[variant]
    if kind.method == "raw":
        return await client.post("/predict", content=data, headers={"content-type": name})
    return await client.post("/predict", files={"file": (name, data, "application/octet-stream")},
                             params=dict(kind.params))


async def load(url: str, plan: Iterator[tuple[Kind, int]], seconds: float, concurrency: int) -> list[dict[str, Any]]:
    """``concurrency`` workers sending the planned requests until ``seconds`` have passed; one record each."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            kind, variant = next(plan)
            started = time.perf_counter()
            try:
                status: int | str = (await send(client, kind, variant)).status_code
            except httpx.HTTPError as error:  # a reset, a refused connection or a timeout: never expected
                status = type(error).__name__
            records.append({"kind": kind.name, "status": status, "expected": kind.expected,
                            "seconds": time.perf_counter() - started})

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return records


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (``VmRSS`` in ``/proc/PID/status``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, folder: Path, max_upload_bytes: int, threads: int | None,
                 log: io.TextIOBase) -> tuple[subprocess.Popen, str]:
    """``cxrdistill serve`` on a free loopback port with ``folder`` as its working directory, running this
    checkout's code; returns once /health answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(cxrdistill.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "cxrdistill", "serve", "--model", str(model.resolve()), "--port", str(port),
               "--max-upload-mb", str(max_upload_bytes / 1024 / 1024)]
    server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.kill()
    raise RuntimeError(f"the server did not start (exit status {server.wait()}); see its log")


def stop_server(server: subprocess.Popen) -> int:
    """Ctrl-C, as a user would stop it; killed if it has not exited 30 s later."""
    server.send_signal(signal.SIGINT)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def marker_files(marker: str, folder: Path) -> list[str]:
    """Files named after ``marker`` under the server's folder, or in any folder a traversal name could reach."""
    places = {folder.parent, folder.parent.parent, Path(tempfile.gettempdir()), Path("/tmp"), Path.cwd(), Path("/")}
    found = {*folder.rglob(f"*{marker}*"), *(hit for place in places for hit in place.glob(f"*{marker}*"))}
    return sorted(str(path) for path in found)


def fresh_checkpoint(architecture: str, size: int, folder: Path) -> Path:
    torch.manual_seed(0)
    config = ExperimentConfig(model=ModelConfig(name=architecture))
    network = create_model(config.model, image_size=size)
    return save_checkpoint(folder / f"{architecture}.safetensors", network, checkpoint_metadata(config, size))


def summarise(records: list[dict[str, Any]], kinds: list[Kind]) -> dict[str, Any]:
    """Per kind and overall: requests, answers by status, unexpected answers, 5xx and latency percentiles (ms)."""
    def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
        latencies = np.array([row["seconds"] for row in rows]) * 1e3
        statuses = Counter(str(row["status"]) for row in rows)
        return {"requests": len(rows), "statuses": dict(sorted(statuses.items())),
                "unexpected": sum(row["status"] != row["expected"] for row in rows),
                "server_errors_5xx": sum(isinstance(row["status"], int) and row["status"] >= 500 for row in rows),
                **({f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 99)} if rows else {})}

    per_kind = {kind.name: {"expected": kind.expected, **stats([r for r in records if r["kind"] == kind.name])}
                for kind in kinds}
    return {"overall": stats(records), "per_kind": per_kind}


def print_table(timed: dict[str, Any], all_phases: dict[str, Any], requests_per_s: float,
                memory: dict[str, float]) -> None:
    table = Table(title=f"service under load: {timed['overall']['requests']} requests, {requests_per_s:.1f}/s")
    for column in ("kind", "expected", "requests", "statuses", "unexpected", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("kind", "statuses") else "right")
    for name, row in timed["per_kind"].items():
        unexpected = all_phases["per_kind"][name]["unexpected"]
        table.add_row(name, str(row["expected"]), str(row["requests"]),
                      " ".join(f"{status}x{count}" for status, count in row["statuses"].items()),
                      f"[red]{unexpected}[/]" if unexpected else "0",
                      f"{row.get('p50_ms', float('nan')):.1f}", f"{row.get('p99_ms', float('nan')):.1f}")
    overall = timed["overall"]
    table.add_row("all", "", str(overall["requests"]), "", str(all_phases["overall"]["unexpected"]),
                  f"{overall['p50_ms']:.1f}", f"{overall['p99_ms']:.1f}", style="bold")
    console = Console(width=140)
    console.print(table)
    console.print(f"server RSS (MB): start {memory['start_mb']:.0f}, after warm-up {memory['after_warmup_mb']:.0f}, "
                  f"end {memory['end_mb']:.0f}; over the timed phase: growth {memory['growth_mb']:+.1f}, drift "
                  f"{memory['drift_mb']:+.1f}, peak {memory['peak_sampled_mb']:.0f}", highlight=False)


async def timed_load(url: str, plan: Iterator[tuple[Kind, int]], seconds: float, concurrency: int,
                     pid: int) -> tuple[list[dict[str, Any]], float, list[float]]:
    """``load`` while sampling the server's RSS every half second; records, wall seconds and the samples."""
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(rss_mb(pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        records = await load(url, plan, seconds, concurrency)
    finally:
        sampler.cancel()
    return records, time.perf_counter() - started, samples


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--duration", type=float, default=None, help="timed seconds (default 60; 4 with --quick)")
    options.add_argument("--warmup", type=float, default=None, help="untimed seconds before (default 10; 1 quick)")
    options.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 8; 2 with --quick)")
    options.add_argument("--model", type=Path, default=None,
                         help="a checkpoint or .onnx to serve (default: a fresh one written here)")
    options.add_argument("--architecture", choices=ARCHITECTURES, default=ARCHITECTURES[0],
                         help="the fresh checkpoint's architecture")
    options.add_argument("--size", type=int, default=64, help="the fresh checkpoint's input size")
    options.add_argument("--max-upload-mb", type=float, default=4.0, help="the server's upload limit, in MiB")
    options.add_argument("--seed", type=int, default=0, help="seed of the request schedule")
    args, argv = parse(options, argv)
    duration = args.duration or (4.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 10.0)
    concurrency = args.concurrency or (2 if args.quick else 8)
    max_upload_bytes = int(args.max_upload_mb * 1024 * 1024)
    marker = f"cxrdistill-load-{uuid.uuid4().hex}"

    with tempfile.TemporaryDirectory(prefix="bench-service-load-") as scratch:
        folder = Path(scratch) / "server"
        folder.mkdir()
        model = args.model or fresh_checkpoint(args.architecture, args.size, Path(scratch))
        with open(Path(scratch) / "server.log", "w+") as log:
            server, url = start_server(model, folder, max_upload_bytes, args.threads, log)
            try:
                health = httpx.get(f"{url}/health", timeout=30).json()
                kinds = request_kinds(max_upload_bytes, marker, health["heatmaps"], args.quick)
                print(f"serving {health['model']} ({health['architecture']}, {health['input_size']} px) at {url}; "
                      f"{concurrency} in flight, {warmup:g} s warm-up then {duration:g} s timed", flush=True)
                plan = schedule(kinds, args.seed)
                start_mb = rss_mb(server.pid)
                warm_records = asyncio.run(load(url, plan, warmup, concurrency))
                after_warmup_mb = rss_mb(server.pid)
                records, elapsed, samples = asyncio.run(timed_load(url, plan, duration, concurrency, server.pid))
                end_mb = rss_mb(server.pid)
                alive = httpx.get(f"{url}/health", timeout=30).status_code == 200
            finally:
                exit_status = stop_server(server)
            log.seek(0)
            server_log = log.read()
        created = marker_files(marker, folder)

    timed = summarise(records, kinds)
    all_phases = summarise(warm_records + records, kinds)
    third = max(len(samples) // 3, 1)
    memory = {"start_mb": start_mb, "after_warmup_mb": after_warmup_mb, "end_mb": end_mb,
              "growth_mb": end_mb - after_warmup_mb, "peak_sampled_mb": max(samples + [end_mb]),
              "drift_mb": float(np.median(samples[-third:]) - np.median(samples[:third]))}
    requests_per_s = len(records) / elapsed
    tracebacks = server_log.count("Traceback (most recent call last)")
    unexercised = [name for name, row in all_phases["per_kind"].items() if row["requests"] == 0]
    failures = {"server_errors_5xx": all_phases["overall"]["server_errors_5xx"],
                "unexpected": all_phases["overall"]["unexpected"], "server_tracebacks": tracebacks,
                "marker_files": created, "alive_after": alive, "unexercised_kinds": unexercised}
    passed = not (failures["server_errors_5xx"] or failures["unexpected"] or tracebacks or created or unexercised) \
        and alive
    print_table(timed, all_phases, requests_per_s, memory)
    print(f"{'PASSED' if passed else 'FAILED'}: {failures}")
    settings = {"model": str(args.model) if args.model else f"fresh {args.architecture} at {args.size} px",
                "served_model": health, "duration_s": duration, "warmup_s": warmup, "concurrency": concurrency,
                "max_upload_bytes": max_upload_bytes, "request_timeout_s": REQUEST_TIMEOUT_S,
                "kinds": {kind.name: {"expected": kind.expected, "weight": kind.weight, "variants": len(kind.variants),
                                      "bytes": [len(data) for data, _ in kind.variants]} for kind in kinds}}
    payload = {
        "passed": passed,
        "failures": failures,
        "requests": len(records),
        "elapsed_s": elapsed,
        "requests_per_s": requests_per_s,
        "error_rate": timed["overall"]["unexpected"] / max(len(records), 1),
        "warmup_requests": len(warm_records),
        "latency": timed,
        "all_phases": all_phases,
        "server_rss": {**memory, "samples_mb": samples},
        "server_exit_status": exit_status,
        "server_log_tail": server_log[-4000:] if not passed else "",
    }
    write_result(NAME, __file__, argv, args, settings, payload)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
