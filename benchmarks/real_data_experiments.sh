#!/usr/bin/env bash
# The real-data experiments behind benchmarks/results/real-*: the KD comparison (issue: distillation),
# the SRM front-end ablation and the temperature sweep, on the shared Kermany train split
# (patient-wise train/val/test carved from it), reduced CPU presets, 600 training images per class.
# About an hour on 2 CPU cores. Re-running continues finished runs instead of repeating them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/chest_xray_224}
OUT=${OUT:-runs/real}
CLI=${CLI:-.venv/bin/cxrdistill}
COMMON=(data.root="$DATA" data.max_per_class=600)

$CLI compare --quiet --seeds 3 --out "$OUT" --report kd-compare "${COMMON[@]}"
$CLI compare --quiet --seeds 3 --out "$OUT" --report srm-ablation --no-teacher \
  --arm student=configs/cpu/student.yaml --arm student_srm=configs/cpu/student_srm.yaml \
  --difference student_srm,student "${COMMON[@]}"
if [ "${SWEEP:-1}" = 1 ]; then
  $CLI sweep-temperature --quiet --teacher "$OUT/seed0/teacher/best.pt" -c configs/cpu/student_kd.yaml \
    --out "$OUT/sweep" "${COMMON[@]}"
fi

mkdir -p benchmarks/results/real
cp "$OUT"/kd-compare.* "$OUT"/kd-compare-difference.* "$OUT"/srm-ablation.* "$OUT"/srm-ablation-difference.* \
  benchmarks/results/real/
[ -f "$OUT/sweep/sweep.md" ] && cp "$OUT"/sweep/sweep.{csv,md,png} benchmarks/results/real/
echo "results in benchmarks/results/real/"
