#!/usr/bin/env bash
# The main job: install what is missing, build, then run the demo.
# The demo grows with the project; each stage says what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
BIN=${BUILD_DIR:-build}/blendfuse
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"

"$BIN" info
if "$BIN" help 2>/dev/null | grep -q "train-fusion"; then
  "$BIN" gen-data --out "$OUT/data" --seed 1
  "$BIN" train-fusion --data "$OUT/data" --out "$OUT/fusion.safetensors" --seed 1
  "$BIN" eval-fusion --model "$OUT/fusion.safetensors" --data "$OUT/data"
else
  echo "demo: the fusion model (train on procedural data, fuse, ablation table) is not in this build yet;"
  echo "demo: what exists is the foundation — run ./scripts/test.sh to exercise every op and loader."
fi
