"""Teacher (InceptionV3 at 299 px) against student (AlexNet at 224 px): ``profile_model`` side by side.

Context: the source paper's Table V reports, while training on a GPU, AlexNet 1.89 GB of GPU memory at
44.44 % utilisation and InceptionV3 3.54 GB at 95.96 %. On a CPU the counterparts are peak resident
memory and CPU time; GPU figures come from ``gpu_profile.py`` on a GPU machine. Each model is profiled
in its own spawned process. Targets (the premise of distilling for weak hardware): the student is
faster to run (teacher/student batch-1 latency >= 1), faster to train (student/teacher training
images/s >= 1) and lighter while training (teacher/student peak training memory >= 1).
"""

from __future__ import annotations

from _common import check, parse, parser, ratio_interval, write_result
from rich.console import Console

from cxrdistill.deployment.profile import compare_profiles, format_table, profile_model
from cxrdistill.runtime.device import resolve_device

NAME = "bench_teacher_student"
PAPER_TABLE_V = {"alexnet": {"gpu_memory_gb": 1.89, "gpu_utilisation_percent": 44.44},
                 "inception_v3": {"gpu_memory_gb": 3.54, "gpu_utilisation_percent": 95.96}}


def main(argv: list[str] | None = None) -> dict:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--device", default="auto", help="cpu, cuda or auto")
    args, argv = parse(options, argv)
    device = resolve_device(args.device)
    if args.quick:
        sizes = {"inception_v3": 80, "alexnet": 64}
        settings = {"batch_size": 4, "repeats": 2, "batches": 1, "train_steps": 1, "warmup": 1, "isolate": False}
    elif device.type == "cuda":
        sizes = {"inception_v3": 299, "alexnet": 224}
        settings = {"batch_size": 32, "repeats": 50, "batches": 20, "train_steps": 100, "warmup": 5, "isolate": True}
    else:  # reduced repeats keep both models within a few minutes on two cores
        sizes = {"inception_v3": 299, "alexnet": 224}
        settings = {"batch_size": 32, "repeats": 5, "batches": 2, "train_steps": 2, "warmup": 1, "isolate": True}
    profiles = {}
    for name, size in sizes.items():
        print(f"profiling {name} at {size}px on {device} ...", flush=True)
        profiles[name] = profile_model(name, device=str(device), input_size=size, **settings)
    teacher, student = profiles["inception_v3"], profiles["alexnet"]
    Console(width=140).print(format_table([teacher, student]))
    ratios = compare_profiles(teacher, student)
    memory = "cuda_train_allocated_mb" if device.type == "cuda" else "peak_rss_train_mb"
    # One profile per model (each a median over its own repeats): a single ratio, no interval over rounds.
    targets = {
        "latency_teacher_vs_student": check("batch-1 latency, teacher / student",
                                            ratio_interval([ratios["latency_ms_median"]]), 1.0),
        "train_throughput_student_vs_teacher": check("training images/s, student / teacher",
                                                     ratio_interval([1.0 / ratios["train_images_per_s"]]), 1.0),
        "train_memory_teacher_vs_student": check(f"{memory}, teacher / student", ratio_interval([ratios[memory]]),
                                                 1.0),
    }
    paper = {"table_v": PAPER_TABLE_V,
             "memory_teacher_vs_student": PAPER_TABLE_V["inception_v3"]["gpu_memory_gb"]
             / PAPER_TABLE_V["alexnet"]["gpu_memory_gb"],
             "utilisation_teacher_vs_student": PAPER_TABLE_V["inception_v3"]["gpu_utilisation_percent"]
             / PAPER_TABLE_V["alexnet"]["gpu_utilisation_percent"]}
    print(f"paper Table V, teacher / student: GPU memory {paper['memory_teacher_vs_student']:.2f}x, "
          f"utilisation {paper['utilisation_teacher_vs_student']:.2f}x")
    payload = {
        "measurements": {name: profile.as_dict() for name, profile in profiles.items()},
        "ratios": ratios,
        "targets": targets,
        "paper": paper,
    }
    write_result(NAME, __file__, argv, args, {"device": str(device), "sizes": sizes, **settings}, payload)
    return payload


if __name__ == "__main__":
    main()
