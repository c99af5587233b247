#!/usr/bin/env bash
# The five-seed new-cohort study of issue 8, as it was run (2026-11-29, 2-core CPU shared with other jobs).
# Runs land in runs/study/seed{N}/{arm}; finished runs are reused, so the two reports at the end only evaluate.
set -euo pipefail
OVERRIDES="data.root=../shared/data/chest_xray_224 data.max_per_class=400 train.threads=1"
EXTERNAL="--external ../shared/data/kermany_test_half_a"
T=runs/study/teacher/best.pt
# the teacher (InceptionV3, 96 px, from scratch; the robust teacher recipe diverged in the pilots)
cxrdistill train -c configs/cpu/teacher.yaml output_dir=runs/study name=teacher $OVERRIDES
cxrdistill evaluate $T --data ../shared/data/kermany_test_half_a --out runs/study/teacher/eval-half-a --json
# the arms, five seeds each (the consistent arm was stopped after two seeds: CPU time)
cxrdistill compare --teacher $T --seeds 5 --out runs/study --report compare-5seeds \
  --arm student=configs/cpu/robust/student.yaml --arm student_kd=configs/cpu/robust/student_kd.yaml \
  --difference student_kd,student $EXTERNAL $OVERRIDES
cxrdistill compare --teacher $T --seeds 2 --out runs/study --report compare-consistent-2seeds \
  --arm student=configs/cpu/robust/student.yaml --arm student_kd=configs/cpu/robust/student_kd.yaml \
  --arm student_kd_consistent=configs/cpu/robust/student_kd_consistent.yaml \
  --difference student_kd_consistent,student_kd $EXTERNAL $OVERRIDES
# the user-script baseline on the same split
python benchmarks/bench_user_script.py --data ../shared/data/chest_xray_224 --external ../shared/data/kermany_test_half_a \
  --recipe configs/cpu/robust/student.yaml --seeds 1 --threads 1 data.max_per_class=400
