#!/usr/bin/env bash
# End-to-end test of the rig commands (rig-fit, rig-solve) on a tiny procedural dataset, with bad inputs.
# usage: test_cli_rig.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"

cat >"$T/cfg.json" <<'J'
{"map_size": 16, "channels": [4, 8], "k_a": 4, "k_e": 4}
J
expect_ok "gen-data" "$BF" gen-data --tiny --out "$T/data" --seed 3
[ -s "$T/data/rig/arkit52.safetensors" ] && ok || bad "gen-data wrote no rig/arkit52.safetensors"
expect_ok "train-fusion" "$BF" train-fusion --data "$T/data" --out "$T/m.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --quiet

# rig-fit: L_G from the model's blendshapes to the ARKit rig (default rig), fit error reported
expect_ok "rig-fit" "$BF" rig-fit --data "$T/data" --model "$T/m.safetensors" --out "$T/map.safetensors"
grep -q "fit error on .* fused frames" "$T/out.txt" && grep -q "L_G rms" "$T/out.txt" && ok || bad "rig-fit does not report the fit error"
[ -s "$T/map.safetensors" ] && ok || bad "rig-fit wrote no map"

S=$(ls "$T/data/speech/"*.npy | head -1); E=$(ls "$T/data/expression/"*.npy | head -1)
expect_ok "fuse" "$BF" fuse --model "$T/m.safetensors" --data "$T/data" --speech "$S" --expression "$E" --out "$T/P01_fused.npy"
SUBJ=$(basename "$S" | sed 's/_.*//')
RIG="$T/data/rig/arkit52.safetensors"
expect_ok "rig-solve map" "$BF" rig-solve --rig "$RIG" --map "$T/map.safetensors" --in "$T/P01_fused.npy" --data "$T/data" --subject "$SUBJ" --out "$T/wl.npy" --csv "$T/wl.csv" --json "$T/wl.json"
grep -q "L_G" "$T/out.txt" && ok || bad "rig-solve --map does not say L_G"
expect_ok "rig-solve bounded" "$BF" rig-solve --rig "$RIG" --bounded --symmetry 0.1 --in "$T/P01_fused.npy" --data "$T/data" --subject "$SUBJ" --out "$T/wb.npy" --csv "$T/wb.csv" --json "$T/wb.json"
FRAMES=$(/usr/bin/python3 -c "import numpy as np, sys; print(np.load(sys.argv[1]).shape[0])" "$T/P01_fused.npy" 2>/dev/null || echo "")
# CSV: header frame + 52 names in ARKit order, one row per frame
head -1 "$T/wb.csv" | grep -q "^frame,eyeBlinkLeft,eyeLookDownLeft," && ok || bad "CSV header lacks the ARKit names in order"
[ "$(head -1 "$T/wb.csv" | tr ',' '\n' | wc -l)" = 53 ] && ok || bad "CSV header does not have frame + 52 columns"
if [ -n "$FRAMES" ]; then
  [ "$(($(wc -l <"$T/wb.csv") - 1))" = "$FRAMES" ] && ok || bad "CSV rows != frames"
  /usr/bin/python3 - "$T" <<'P' && ok || bad "bounded weights out of [0,1] / JSON names / L_G shape"
import json, sys, numpy as np
t = sys.argv[1]
wb, wl = np.load(t + "/wb.npy"), np.load(t + "/wl.npy")
j = json.load(open(t + "/wb.json"))
assert wb.shape == wl.shape and wb.shape[1] == 52, (wb.shape, wl.shape)
assert np.isfinite(wb).all() and np.isfinite(wl).all()
assert wb.min() >= 0 and wb.max() <= 1, (wb.min(), wb.max())
assert j["names"][17] == "jawOpen" and len(j["weights"]) == wb.shape[0] and j["method"] == "bounded"
assert abs(np.array(j["weights"]) - wb).max() < 1e-6
for n in ("eyeLookDownLeft", "tongueOut"):
    assert (wb[:, j["names"].index(n)] == 0).all()
P
fi

# a metres copy of the data: the same weights (the solvers work in mm)
expect_ok "gen-data m" "$BF" gen-data --tiny --out "$T/data_m" --seed 3 --units m
Sm="$T/data_m/speech/$(basename "$S")"
expect_ok "rig-solve offsets mm" "$BF" rig-solve --rig "$RIG" --bounded --in "$S" --data "$T/data" --out "$T/w_mm.npy"
expect_ok "rig-solve on metres" "$BF" rig-solve --rig "$T/data_m/rig/arkit52.safetensors" --bounded --in "$Sm" --data "$T/data_m" --out "$T/w_m.npy"
if [ -n "$FRAMES" ]; then
  /usr/bin/python3 -c "import numpy as np,sys; a,b=np.load(sys.argv[1]),np.load(sys.argv[2]); assert abs(a-b).max()<1e-3, abs(a-b).max()" "$T/w_mm.npy" "$T/w_m.npy" && ok || bad "weights from mm and metres data differ"
fi

# bad inputs: clear errors naming the file, nothing written
expect_err "missing rig" "nope.safetensors: file not found" "$BF" rig-solve --rig "$T/nope.safetensors" --bounded --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "model is not a rig" "not a blendfuse rig" "$BF" rig-solve --rig "$T/m.safetensors" --bounded --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "rig is not a map" "not a blendfuse rig map" "$BF" rig-solve --rig "$RIG" --map "$RIG" --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "missing input" "missing.npy: file not found" "$BF" rig-solve --rig "$RIG" --bounded --in "$T/missing.npy" --data "$T/data" --out "$T/x.npy"
expect_err "neither map nor bounded" "--map MAP or --bounded" "$BF" rig-solve --rig "$RIG" --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "offsets without units" "--offsets needs --units" "$BF" rig-solve --rig "$RIG" --bounded --offsets --in "$S" --out "$T/x.npy"
expect_ok "gen other topology" "$BF" gen-data --tiny --grid 20 --out "$T/data2" --seed 3
S2=$(ls "$T/data2/speech/"*.npy | head -1)
expect_err "vertex count mismatch" "vertex count mismatch" "$BF" rig-solve --rig "$RIG" --bounded --in "$S2" --data "$T/data2" --out "$T/x.npy"
expect_err "rig-fit rig of other topology" "vertices" "$BF" rig-fit --data "$T/data" --model "$T/m.safetensors" --rig "$T/data2/rig/arkit52.safetensors" --out "$T/x.safetensors"
expect_err "map for another rig" "was fitted for rig" "$BF" rig-solve --rig "$T/data2/rig/arkit52.safetensors" --map "$T/map.safetensors" --in "$S2" --data "$T/data2" --out "$T/x.npy"
head -c 200 "$RIG" >"$T/trunc.safetensors"
expect_err "truncated rig" "trunc.safetensors" "$BF" rig-solve --rig "$T/trunc.safetensors" --bounded --in "$S" --data "$T/data" --out "$T/x.npy"
/usr/bin/python3 -c "import numpy as np,sys; a=np.load(sys.argv[1]); a[1,5,2]=np.nan; np.save(sys.argv[2],a)" "$S" "$T/P01_nan.npy" 2>/dev/null && \
  expect_err "NaN input" "non-finite" "$BF" rig-solve --rig "$RIG" --bounded --in "$T/P01_nan.npy" --data "$T/data" --out "$T/x.npy"
expect_err "rig-solve --out = --in" "same file as the input --in" "$BF" rig-solve --rig "$RIG" --bounded --in "$S" --data "$T/data" --out "$S"
expect_err "rig-solve --csv = --out" "outputs must differ" "$BF" rig-solve --rig "$RIG" --bounded --in "$S" --data "$T/data" --out "$T/x.npy" --csv "$T/x.npy"
expect_err "rig-solve --smooth nan" "--smooth must be a finite number" "$BF" rig-solve --rig "$RIG" --bounded --smooth nan --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "rig-solve --l2 -1" "--l2 must be a finite number" "$BF" rig-solve --rig "$RIG" --bounded --l2 -1 --in "$S" --data "$T/data" --out "$T/x.npy"
expect_err "rig-fit --out = --model" "same file as the input --model" "$BF" rig-fit --data "$T/data" --model "$T/m.safetensors" --out "$T/m.safetensors"
expect_err "rig-fit --out in a missing folder" "does not exist" "$BF" rig-fit --data "$T/data" --model "$T/m.safetensors" --out "$T/nofolder/x.safetensors"
[ ! -e "$T/x.npy" ] && [ ! -e "$T/x.safetensors" ] && ok || bad "a failed command left an output file"

echo "cli_rig: $passes passed, $fails failed"
[ "$fails" = 0 ]
