"""CPU inference of the deployable models: PyTorch eager fp32 against ONNX Runtime fp32 and int8 (static, QDQ).

For each model (the AlexNet student, the slim students MobileNetV3-Small and ResNet18, the InceptionV3
teacher), randomly initialised at one input size (224 px by default, the paper's student size; ``--size 96``
gives the CPU presets' size): batch-1 latency (median of ``--latency-calls`` calls) and batch-32 throughput,
for every runtime, interleaved round by round in a rotating order; each ratio is taken against PyTorch
eager fp32 of the same model in the same round and reported as a geometric mean with a 95 % interval.
Speed does not depend on training, so random weights are used; the int8 model is calibrated on random
inputs here (accuracy is measured on trained models by ``cxrdistill export --int8``, see
``benchmarks/results/deploy/README.md``). File sizes: the fp32 and int8 ``.onnx`` files. Peak memory: the
rise of the peak resident size (Linux ``VmHWM``, reset through ``clear_refs``) over the size after imports,
while loading the model and running one batch of 32, each in its own fresh spawned process.

Targets (AlexNet student): int8 >= 2x PyTorch eager fp32 at batch 1; int8 file <= 1/3 of fp32. Why int8 gains
what it does on this CPU is measured with variants of the student's int8 model: per-tensor instead of
per-channel weights, QOperator instead of QDQ, the first convolution or the fully connected layers left in
fp32, 7-bit weights (``reduce_range``), and 1 vs 2 intra-op threads.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from _common import check, describe, median, parse, parser, ratio_interval, write_result

from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.quantize import QuantizationSettings, quantize_onnx
from cxrdistill.models import create_model
from cxrdistill.provenance import cpu_name
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint
from cxrdistill.runtime.resources import current_rss_mb, peak_rss_mb, reset_peak_rss, run_in_fresh_process

NAME = "bench_deploy"
MODELS = ("alexnet", "mobilenet_v3_small", "resnet18", "inception_v3")
SPEED_TARGET = 2.0
SIZE_TARGET = 1 / 3


@dataclass(frozen=True)
class Runtime:
    """One way to run one model: ``torch`` (eager) or ``onnx`` (a file), with its intra-op thread count."""

    model: str
    kind: str
    path: str | None
    threads: int


class RandomCalibration:
    """Random calibration batches: enough for speed (the scales do not change the kernels)."""

    def __init__(self, size: int, batches: int, batch_size: int = 8) -> None:
        self.size, self.batches, self.batch_size, self._given = size, batches, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._given == self.batches:
            return None
        self._given += 1
        generator = np.random.default_rng(self._given)
        return {"image": generator.standard_normal((self.batch_size, 3, self.size, self.size)).astype(np.float32)}

    def rewind(self) -> None:
        self._given = 0


def load_runner(runtime: Runtime, size: int):
    """A callable running one float32 batch; the model is built (or the session created) here."""
    if runtime.kind == "torch":
        torch.set_num_threads(runtime.threads)
        torch.manual_seed(0)
        model = create_model(ModelConfig(name=runtime.model), image_size=size).eval()

        def run_torch(batch: np.ndarray) -> None:
            with torch.inference_mode():
                model(torch.from_numpy(batch))

        return run_torch
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = runtime.threads, 1
    session = onnxruntime.InferenceSession(runtime.path, options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"image": batch})


def peak_memory_mb(runtime: Runtime, size: int, batch_size: int) -> dict[str, float]:
    """In a fresh process: peak RSS rise while loading ``runtime`` and running one batch (see the docstring)."""
    import onnxruntime  # noqa: F401  (imported before the baseline, like torch, so it does not count)

    baseline = current_rss_mb()
    resets = reset_peak_rss()
    run = load_runner(runtime, size)
    run(np.zeros((batch_size, 3, size, size), dtype=np.float32))
    peak = peak_rss_mb()
    return {"baseline_mb": baseline, "peak_mb": peak, "rise_mb": peak - baseline, "peak_reset": resets}


def prepare(model: str, size: int, folder: Path, threads: int, calibration_batches: int,
            variants: dict[str, QuantizationSettings]) -> tuple[dict[str, Runtime], dict[str, float]]:
    """Random-weight checkpoint -> verified fp32 ONNX -> int8 ONNX (and variants); runtimes and file sizes (MB)."""
    torch.manual_seed(0)
    config = ExperimentConfig(model=ModelConfig(name=model))
    network = create_model(config.model, image_size=size)
    checkpoint = save_checkpoint(folder / f"{model}.safetensors", network, checkpoint_metadata(config, size))
    fp32 = export_onnx(checkpoint, folder / f"{model}.onnx").path
    runtimes = {"torch_fp32": Runtime(model, "torch", None, threads), "onnx_fp32": Runtime(model, "onnx", str(fp32),
                                                                                            threads)}
    sizes = {"torch_state_dict": checkpoint.stat().st_size / 1e6, "onnx_fp32": fp32.stat().st_size / 1e6}
    for name, settings in {"onnx_int8": QuantizationSettings(), **variants}.items():
        settings = resolve_nodes(settings, fp32)
        path, _ = quantize_onnx(fp32, folder / f"{model}.{name}.onnx", RandomCalibration(size, calibration_batches),
                                settings)
        runtimes[name] = Runtime(model, "onnx", str(path), threads)
        sizes[name] = path.stat().st_size / 1e6
    return runtimes, sizes


def resolve_nodes(settings: QuantizationSettings, fp32: Path) -> QuantizationSettings:
    """``exclude_nodes=("first_conv",)`` names the graph's first Conv node (names differ between exports)."""
    if "first_conv" not in settings.exclude_nodes:
        return settings
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    first = next(node.name for node in graph.node if node.op_type == "Conv")
    return replace(settings, exclude_nodes=(first,))


def student_variants(threads: int, quick: bool) -> tuple[dict[str, QuantizationSettings], dict[str, int]]:
    """Int8 variants of the student, and extra thread counts to time its torch and int8 runtimes at
    (``quick``: one variant, to exercise the plumbing)."""
    variants = {
        "onnx_int8_per_tensor": QuantizationSettings(per_channel=False),
        "onnx_int8_qoperator": QuantizationSettings(quant_format="qoperator"),
        "onnx_int8_fp32_first_conv": QuantizationSettings(exclude_nodes=("first_conv",)),
        "onnx_int8_convs_only": QuantizationSettings(op_types=("Conv",)),
        "onnx_int8_reduce_range": QuantizationSettings(reduce_range=True),
    }
    other = 2 if threads == 1 else 1
    if quick:
        return {"onnx_int8_fp32_first_conv": variants["onnx_int8_fp32_first_conv"]}, {f"onnx_int8_{other}t": other}
    return variants, {f"torch_fp32_{other}t": other, f"onnx_int8_{other}t": other}


def time_round(runners: dict, order: list[str], single: np.ndarray, batch: np.ndarray, calls: int,
               latency: dict, throughput: dict) -> None:
    for name in order:
        run = runners[name]
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            run(single)
            samples.append(time.perf_counter() - started)
        latency[name].append(median(samples))
        started = time.perf_counter()
        run(batch)
        throughput[name].append(len(batch) / (time.perf_counter() - started))


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--models", nargs="+", default=None, choices=MODELS, help="models (default: all four)")
    options.add_argument("--size", type=int, default=None, help="input size (default 224; 64 with --quick)")
    options.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 2 with --quick)")
    options.add_argument("--latency-calls", type=int, default=None, help="batch-1 calls per round (default 10)")
    args, argv = parse(options, argv)
    threads = torch.get_num_threads()
    if args.quick:
        models, size, rounds, calls, batch_size, calibration = ["mobilenet_v3_small"], 64, 2, 2, 4, 1
    else:
        models, size, rounds, calls, batch_size, calibration = list(MODELS), 224, 5, 10, 32, 4
    models = args.models or models
    size, rounds, calls = args.size or size, args.rounds or rounds, args.latency_calls or calls
    student = models[0]
    variants, thread_variants = student_variants(threads, args.quick)
    print(f"{models} at {size}px, {rounds} rounds, {calls} batch-1 calls per round, batch {batch_size}, "
          f"{threads} thread(s); variants on {student}")

    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as scratch:
        runtimes: dict[str, Runtime] = {}
        sizes: dict[str, dict[str, float]] = {}
        setup_seconds: dict[str, float] = {}
        for model in models:
            started = time.perf_counter()
            found, sizes[model] = prepare(model, size, Path(scratch), threads, calibration,
                                          variants if model == student else {})
            setup_seconds[model] = time.perf_counter() - started
            runtimes.update({f"{model}/{name}": runtime for name, runtime in found.items()})
            if model == student:
                for name, count in thread_variants.items():
                    base = found["torch_fp32" if name.startswith("torch") else "onnx_int8"]
                    runtimes[f"{model}/{name}"] = replace(base, threads=count)
            print(f"{model}: prepared in {setup_seconds[model]:.0f} s; files (MB) "
                  f"{ {k: round(v, 2) for k, v in sizes[model].items()} }")

        single = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        batch = np.random.default_rng(1).standard_normal((batch_size, 3, size, size)).astype(np.float32)
        latency: dict[str, list[float]] = {name: [] for name in runtimes}
        throughput: dict[str, list[float]] = {name: [] for name in runtimes}
        order = list(runtimes)
        file_mb = {name: Path(r.path or Path(scratch) / f"{r.model}.safetensors").stat().st_size / 1e6
                   for name, r in runtimes.items()}
        runners = {}  # each model loaded once and kept for all rounds, after one untimed call per batch size
        for name, runtime in runtimes.items():
            runners[name] = thread_bound(load_runner(runtime, size), runtime.threads)
            runners[name](single)
            runners[name](batch)
        for round_index in range(rounds):
            shift = round_index % len(order)
            time_round(runners, order[shift:] + order[:shift], single, batch, calls, latency, throughput)
        del runners

        memory = {}
        for name, runtime in runtimes.items():
            if name.rpartition("/")[2] not in ("torch_fp32", "onnx_fp32", "onnx_int8"):
                continue
            memory[name] = run_in_fresh_process(peak_memory_mb, runtime, size, batch_size,
                                                what=f"measuring the memory of {name}")

    ratios, targets, table = {}, {}, []
    for name in runtimes:
        model, _, kind = name.partition("/")
        baseline = f"{model}/torch_fp32"
        row = {"model": model, "runtime": kind, "latency_ms_b1": 1e3 * median(latency[name]),
               f"images_per_s_b{batch_size}": median(throughput[name]),
               "file_mb": file_mb[name],
               "peak_rss_rise_mb": memory.get(name, {}).get("rise_mb")}
        if name != baseline:
            ratios[f"{name}/latency_speedup_vs_torch_fp32"] = ratio_interval(
                [b / v for b, v in zip(latency[baseline], latency[name], strict=True)])
            ratios[f"{name}/throughput_vs_torch_fp32"] = ratio_interval(
                [v / b for b, v in zip(throughput[baseline], throughput[name], strict=True)])
            row["latency_speedup"] = ratios[f"{name}/latency_speedup_vs_torch_fp32"]["mean"]
            row["throughput_ratio"] = ratios[f"{name}/throughput_vs_torch_fp32"]["mean"]
            print(f"{name}: batch-1 speed-up {describe(ratios[f'{name}/latency_speedup_vs_torch_fp32'])}, "
                  f"throughput {describe(ratios[f'{name}/throughput_vs_torch_fp32'])}")
        table.append(row)
    targets["student_int8_latency_vs_torch_fp32"] = check(
        f"{student} int8 batch-1 speed-up over PyTorch eager fp32",
        ratios[f"{student}/onnx_int8/latency_speedup_vs_torch_fp32"], SPEED_TARGET)
    size_ratio = sizes[student]["onnx_int8"] / sizes[student]["onnx_fp32"]
    targets["student_int8_file_vs_fp32"] = {"ratio": round(size_ratio, 4), "interval_95": [None, None],
                                            "target": f"<= {SIZE_TARGET:.3f}", "met": size_ratio <= SIZE_TARGET}
    print(f"{student} int8 file / fp32 file: {size_ratio:.3f} (target <= {SIZE_TARGET:.3f}) -> "
          f"{'MET' if size_ratio <= SIZE_TARGET else 'NOT MET'}")
    settings = {"models": models, "input_size": size, "rounds": rounds, "latency_calls": calls,
                "batch_size": batch_size, "threads": threads, "calibration_batches_of_8": calibration,
                "student": student, "student_variants": {k: v.as_dict() for k, v in variants.items()},
                "thread_variants": thread_variants, "cpu": cpu_name()}
    payload = {
        "table": table,
        "measurements": {"latency_s_b1_per_round": latency, "images_per_s_per_round": throughput,
                         "file_mb": sizes, "peak_memory": memory, "setup_seconds": setup_seconds},
        "ratios": ratios,
        "targets": targets,
    }
    write_result(NAME, __file__, argv, args, settings, payload)
    return payload


def thread_bound(run, threads: int):
    """Torch's thread count is process-wide: set it before each torch call (ONNX Runtime sessions keep their own)."""

    def bound(batch: np.ndarray) -> None:
        torch.set_num_threads(threads)
        run(batch)

    return bound


if __name__ == "__main__":
    main()
