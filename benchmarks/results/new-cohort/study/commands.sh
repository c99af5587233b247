#!/usr/bin/env bash
# The five-seed new-cohort study, as it was run (2026-11-29, 2-core CPU shared with other jobs).
# Runs land in runs/study/seed{N}/{arm}; finished runs are reused, so the two reports at the end only evaluate.
set -euo pipefail
OVERRIDES="data.root=../shared/data/chest_xray_224 data.max_per_class=400 train.threads=1"
EXTERNAL="--external ../shared/data/kermany_test_half_a"
T=runs/study/teacher/best.pt
# the teacher (InceptionV3, 96 px, from scratch; the robust teacher recipe diverged in the pilots)
cxrdistill train -c cpu/teacher output_dir=runs/study name=teacher $OVERRIDES
cxrdistill evaluate $T --data ../shared/data/kermany_test_half_a --out runs/study/teacher/eval-half-a --json
# the arms, five seeds each (the consistent arm was stopped after two seeds: CPU time)
cxrdistill compare --teacher $T --seeds 5 --out runs/study --report compare-5seeds \
  --arm student=cpu/robust/student --arm student_kd=cpu/robust/student_kd \
  --difference student_kd,student $EXTERNAL $OVERRIDES
cxrdistill compare --teacher $T --seeds 2 --out runs/study --report compare-consistent-2seeds \
  --arm student=cpu/robust/student --arm student_kd=cpu/robust/student_kd \
  --arm student_kd_consistent=cpu/robust/student_kd_consistent \
  --difference student_kd_consistent,student_kd $EXTERNAL $OVERRIDES
# the user-script baseline on the same split
python benchmarks/bench_user_script.py --data ../shared/data/chest_xray_224 --external ../shared/data/kermany_test_half_a \
  --recipe cpu/robust/student --seeds 1 --threads 1 data.max_per_class=400

# --- Later runs (2026-11-29, 22:14-), the same folder and overrides ---
# The old runs were converted once: for d in runs/study/teacher runs/study/seed*/*; do
#   cxrdistill convert-checkpoint $d/last.pt $d/best.pt; done
# The consistent arm to five seeds (seed 4 trained directly in a second lane with the settings compare gives it),
# then all three arms in one report with each paired difference:
cxrdistill compare --teacher $T --seeds 5 --out runs/study --report compare-3arms-5seeds \
  --arm student=benchmarks/results/new-cohort/study/configs/student.yaml --arm student_kd=benchmarks/results/new-cohort/study/configs/student_kd.yaml \
  --arm student_kd_consistent=benchmarks/results/new-cohort/study/configs/student_kd_consistent.yaml \
  --difference student_kd,student $EXTERNAL $OVERRIDES   # also with student_kd_consistent,student_kd (-consistent)
# What the teacher hands a consistent student (P(PNEUMONIA) on its own training views vs the students' views):
PYTHONPATH=src python benchmarks/new_cohort_teacher_views.py
# Warm-up moving average (configs/*_ewarm.yaml = the robust configs + train.ema_warmup: true), four seeds (the fifth was stopped for CPU time):
cxrdistill compare --teacher $T --seeds 4 --out runs/study --report ewarm-4seeds \
  --arm student_ewarm=benchmarks/results/new-cohort/study/configs/student_ewarm.yaml \
  --arm student_kd_ewarm=benchmarks/results/new-cohort/study/configs/student_kd_ewarm.yaml \
  --difference student_kd_ewarm,student_ewarm $EXTERNAL $OVERRIDES
# A teacher trained on the students' views (now cpu/robust/teacher), then cached and consistent
# distillation from it, two seeds:
cxrdistill train -c benchmarks/results/new-cohort/study/configs/teacher_aug.yaml output_dir=runs/study name=teacher_aug \
  "data.external=[../shared/data/kermany_test_half_a]" $OVERRIDES
cxrdistill compare --teacher runs/study/teacher_aug/best.safetensors --seeds 2 --out runs/study-taug --report taug-2seeds \
  --arm student_kd=benchmarks/results/new-cohort/study/configs/student_kd.yaml --arm student_kd_consistent=benchmarks/results/new-cohort/study/configs/student_kd_consistent.yaml \
  --difference student_kd_consistent,student_kd $EXTERNAL $OVERRIDES
# ... and the recommended recipe end to end (cached KD with the warm-up moving average from the augmented teacher):
cxrdistill compare --teacher runs/study/teacher_aug/best.safetensors --seeds 2 --out runs/study-taug --report taug-2seeds-ewarm \
  --arm student_kd=benchmarks/results/new-cohort/study/configs/student_kd.yaml \
  --arm student_kd_consistent=benchmarks/results/new-cohort/study/configs/student_kd_consistent.yaml \
  --arm student_kd_ewarm=benchmarks/results/new-cohort/study/configs/student_kd_ewarm.yaml \
  --difference student_kd_ewarm,student_kd $EXTERNAL $OVERRIDES
# The per-seed tables of docs/new-cohort.md (they pair runs across the two output folders):
PYTHONPATH=src python benchmarks/new_cohort_tables.py taug --seeds 0,1
PYTHONPATH=src python benchmarks/new_cohort_tables.py ewarm --seeds 0,1,2,3
