"""One prepared GPU run: teacher and student training cost at the paper's sizes, batch 32, AMP and float32.

For the source paper's Table V (GPU memory and utilisation while training: AlexNet 1.89 GB / 44.44 %,
InceptionV3 3.54 GB / 95.96 %). Each of InceptionV3 at 299 px and AlexNet at 224 px is profiled with
``cxrdistill.deployment.profile.profile_model`` in its own spawned process, with autocast (bf16 where
supported) and in float32: CUDA peak memory for inference and training, NVML utilisation sampled every
50 ms during the training steps, NVML device memory in use, images/s. Inputs are random tensors on the
GPU, so utilisation is the model's alone, without the data loading the paper's figure includes.
Results are written to ``OUTPUT/gpu_profile.json`` after every profile, so a run cut short keeps what
it finished. About 2 minutes on one H100; ``--device cpu --quick`` is a smoke test of a few seconds.

    PYTHONPATH=src python benchmarks/gpu_profile.py --output gpu-results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from cxrdistill.deployment.profile import compare_profiles, format_table, profile_model
from cxrdistill.provenance import provenance
from cxrdistill.runtime.device import resolve_device

PAPER_TABLE_V = {"alexnet": {"gpu_memory_gb": 1.89, "gpu_utilisation_percent": 44.44},
                 "inception_v3": {"gpu_memory_gb": 3.54, "gpu_utilisation_percent": 95.96}}
FULL = {"inception_v3": (299, 200), "alexnet": (224, 1000)}
"""Model -> (input size, timed training steps); AlexNet steps are short, so more of them give NVML time."""
QUICK = {"inception_v3": (80, 1), "alexnet": (64, 1)}


def main(argv: list[str] | None = None) -> dict:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--output", "--results-dir", dest="output", type=Path,
                         default=Path(__file__).resolve().parent / "results" / "gpu",
                         help="folder for gpu_profile.json")
    options.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    options.add_argument("--amp", choices=["both", "on", "off"], default="both",
                         help="profile with autocast (on), float32 (off) or both")
    options.add_argument("--batch-size", type=int, default=32)
    options.add_argument("--quick", action="store_true",
                         help="tiny sizes and step counts, in this process: a smoke test")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = options.parse_args(argv)
    device = resolve_device(args.device)
    plan = QUICK if args.quick else FULL
    batch_size = 4 if args.quick else args.batch_size
    repeats, batches, warmup = (2, 1, 1) if args.quick else (50, 20, 5)
    amp_modes = ["on", "off"] if args.amp == "both" else [args.amp]
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "gpu_profile.json"
    config = {"arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
              "plan": plan, "batch_size": batch_size, "repeats": repeats, "batches": batches, "warmup": warmup}
    record: dict = {"benchmark": "gpu_profile", "quick": args.quick, **provenance([__file__, *argv], config),
                    "paper_table_v": PAPER_TABLE_V, "profiles": {}, "ratios_teacher_vs_student": {}}
    console = Console(width=140)
    for amp in amp_modes:
        done = {}
        for name, (size, steps) in plan.items():
            started = time.perf_counter()
            print(f"{name}@{size}px amp={amp} on {device} ...", flush=True)
            done[name] = profile_model(name, device=str(device), batch_size=batch_size, input_size=size,
                                       repeats=repeats, batches=batches, train_steps=steps, warmup=warmup, amp=amp,
                                       isolate=not args.quick)
            record["profiles"][f"{name}/amp={amp}"] = {**done[name].as_dict(),
                                                       "wall_seconds": time.perf_counter() - started}
            path.write_text(json.dumps(record, indent=1) + "\n")
        console.print(format_table([done["inception_v3"], done["alexnet"]]))
        record["ratios_teacher_vs_student"][f"amp={amp}"] = compare_profiles(done["inception_v3"], done["alexnet"])
        path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
