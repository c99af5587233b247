#!/usr/bin/env bash
# What `pip install cxrdistill` gives a user: build the sdist and, from it, the wheel; install the wheel (not
# editable) into a fresh virtual environment outside the checkout; run the product from a folder outside the
# checkout, so nothing can be read from the source tree (presets, the sample archive, the service's page).
#
#   bash scripts/wheel_smoke.sh            # PYTHON: an interpreter with `build` (the dev extra); default python3
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

"$PYTHON" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
"$PYTHON" -m venv "$WORK/venv"
VENV_BIN="$WORK/venv/bin"
"$VENV_BIN/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1  # pip takes these from the local disk
"$VENV_BIN/python" -m pip install --quiet "$WORK"/dist/cxrdistill-*.whl
echo "built and installed in $((SECONDS - start)) s"

cd "$WORK"
"$VENV_BIN/cxrdistill" reproduce --preset demo --help >/dev/null
# The main job on its synthetic set, sized to seconds: one epoch of each model at 75 px on a few images.
"$VENV_BIN/cxrdistill" demo --synthetic --quiet --out runs/demo train.epochs=1 train.threads=1 \
  data.image_size=75 data.max_per_class=24 data.batch_size=8 data.num_workers=0 evaluation.n_bootstrap=20
test -f runs/demo/student_kd-s0/config.yaml && grep -q "distilled - plain" runs/demo/demo.md
"$VENV_BIN/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import cxrdistill
from cxrdistill.config import preset, preset_names

root = Path(sys.argv[1]).resolve()
installed = Path(cxrdistill.__file__).resolve()
assert root not in installed.parents, f"imported from the checkout: {installed}"
assert "demo/student" in preset_names() and preset("cpu/teacher").model.name == "inception_v3"
from cxrdistill.data.sample import SAMPLE_SOFT_TARGETS  # the demo's shipped teacher is package data
from cxrdistill.distillation.soft_targets import read_soft_targets
assert len(read_soft_targets(SAMPLE_SOFT_TARGETS).entries) == 641
assert "efficientnet_lite0" in cxrdistill.list_models() and "alexnet" in cxrdistill.list_models("alex*")
model = cxrdistill.create_model("alexnet", num_classes=2, image_size=80)
print(f"cxrdistill from {installed.parent.parent.name}: {len(preset_names())} presets, "
      f"AlexNet {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
PY
echo "wheel smoke passed in $((SECONDS - start)) s"
