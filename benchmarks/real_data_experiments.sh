#!/usr/bin/env bash
# The real-data experiments behind benchmarks/results/real/: the KD comparison (teacher vs plain vs
# distilled student, 3 seeds), the SRM front-end ablation (3 seeds) and the temperature sweep, on the
# shared Kermany train split (patient-wise train/val/test carved from it), reduced CPU presets, 600
# training images per class. About 75 minutes on 2 idle CPU cores. Re-running continues finished runs
# instead of repeating them (runs live in $OUT/seed{N}/{arm}).
# The whole study with a report beside the paper's tables is now one command (README, "The demo and the
# whole study in one command"): cxrdistill reproduce --preset cpu --data "$DATA"
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/chest_xray_224}
OUT=${OUT:-runs/real}
CLI=${CLI:-.venv/bin/cxrdistill}
COMMON=(data.root="$DATA" data.max_per_class=600)
RESULTS=benchmarks/results/real
mkdir -p "$RESULTS"

$CLI compare --quiet --seeds 3 --out "$OUT" --report kd-compare "${COMMON[@]}"
cp "$OUT"/kd-compare.* "$OUT"/kd-compare-difference.* "$RESULTS"/

$CLI compare --quiet --seeds 3 --out "$OUT" --report srm-ablation --no-teacher \
  --arm student=cpu/student --arm student_srm=cpu/student_srm \
  --difference student_srm,student "${COMMON[@]}"
cp "$OUT"/srm-ablation.* "$OUT"/srm-ablation-difference.* "$RESULTS"/

$CLI sweep-temperature --quiet --teacher "$OUT/seed0/teacher/best.safetensors" -c cpu/student_kd \
  --out "$OUT/sweep" "${COMMON[@]}"
cp "$OUT"/sweep/sweep.{csv,md,png} "$RESULTS"/
echo "results in $RESULTS/"
