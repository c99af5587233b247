#!/usr/bin/env bash
# Runs the seven CPU benchmarks one after another (about 27 minutes on 2 idle cores); results land in
# benchmarks/results/. Extra arguments go to every script, e.g. `benchmarks/run_all.sh --threads 1`
# on a shared machine, or `--quick` for a smoke run. PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
for name in bench_data bench_bootstrap bench_distill bench_trainer bench_teacher_student bench_ddp bench_deploy bench_service_load; do
    echo "== ${name}"
    "${PYTHON}" "benchmarks/${name}.py" "$@"
done
