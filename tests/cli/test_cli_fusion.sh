#!/usr/bin/env bash
# End-to-end test of the fusion commands on a tiny procedural dataset, including bad inputs.
# usage: test_cli_fusion.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"

cat >"$T/cfg.json" <<'J'
{"map_size": 16, "channels": [4, 8], "k_a": 4, "k_e": 4}
J
expect_ok "gen-data" "$BF" gen-data --tiny --out "$T/data" --seed 3
# json_field_ FILE KEY ROW: the KEY number of the ROW-th (1-based) row of an eval-fusion --json output
json_field_() { grep "\"$2\"" "$1" | sed -n "$3p" | sed 's/.*: *//; s/,$//'; }
expect_ok "train-fusion" "$BF" train-fusion --data "$T/data" --out "$T/a.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --quiet
expect_ok "train-fusion paper variant" "$BF" train-fusion --data "$T/data" --out "$T/p.safetensors" --config "$T/cfg.json" --variant paper --epochs 1 --batch 8 --quiet
# resume: 1 epoch + resume to 2 epochs must equal 2 epochs straight
expect_ok "train 1 epoch" "$BF" train-fusion --data "$T/data" --out "$T/b1.safetensors" --config "$T/cfg.json" --epochs 1 --batch 8 --checkpoint "$T/ck.safetensors" --quiet
expect_ok "resume to 2" "$BF" train-fusion --data "$T/data" --out "$T/b.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --checkpoint "$T/ck.safetensors" --resume --quiet
if cmp -s "$T/a.safetensors" "$T/b.safetensors"; then ok; else bad "resumed training differs from uninterrupted training"; fi

# --backend: the reference trains deterministically (resume = uninterrupted, as above); oneDNN (the
# default when built) gives the same model up to float rounding; an unknown backend is refused
expect_ok "train-fusion --backend cpu" "$BF" train-fusion --data "$T/data" --out "$T/c.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --backend cpu
grep -q "backend cpu" "$T/out.txt" && ok || bad "train-fusion --backend cpu does not name its backend"
expect_ok "train 1 epoch on cpu" "$BF" train-fusion --data "$T/data" --out "$T/c1.safetensors" --config "$T/cfg.json" --epochs 1 --batch 8 --checkpoint "$T/ckc.safetensors" --backend cpu --quiet
expect_ok "resume to 2 on cpu" "$BF" train-fusion --data "$T/data" --out "$T/c2.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --checkpoint "$T/ckc.safetensors" --resume --backend cpu --quiet
cmp -s "$T/c.safetensors" "$T/c2.safetensors" && ok || bad "--backend cpu: resumed training differs from uninterrupted training"
expect_err "train-fusion --backend gpu" "--backend: gpu not in {cpu,onednn}" "$BF" train-fusion --data "$T/data" --out "$T/x.safetensors" --config "$T/cfg.json" --epochs 1 --backend gpu
[ ! -e "$T/x.safetensors" ] && ok || bad "train-fusion --backend gpu wrote a model"
if "$BF" info | grep -q onednn; then
  expect_ok "train-fusion --backend onednn" "$BF" train-fusion --data "$T/data" --out "$T/o.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --backend onednn
  grep -q "backend onednn" "$T/out.txt" && ok || bad "train-fusion --backend onednn does not name its backend"
  expect_ok "train-fusion, default backend, verbose" "$BF" train-fusion --data "$T/data" --out "$T/d.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8
  grep -q "backend onednn" "$T/out.txt" && ok || bad "train-fusion does not default to onednn in a oneDNN build"
  expect_ok "eval cpu model" "$BF" eval-fusion --data "$T/data" --model "$T/c.safetensors" --backend cpu --json; cp "$T/out.txt" "$T/ev_c.json"
  expect_ok "eval onednn model" "$BF" eval-fusion --data "$T/data" --model "$T/o.safetensors" --backend onednn --json; cp "$T/out.txt" "$T/ev_o.json"
  for k in err_mm gap_mm lve_mm; do
    A=$(json_field_ "$T/ev_c.json" $k 2); B=$(json_field_ "$T/ev_o.json" $k 2)
    awk -v a="$A" -v b="$B" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.02 * (a > b ? a : b) + 1e-6) }' && ok || bad "eval $k: cpu-trained $A vs onednn-trained $B"
  done
  # one model on both backends: the same table up to float rounding
  expect_ok "eval-fusion --backend cpu" "$BF" eval-fusion --data "$T/data" --model "$T/o.safetensors" --backend cpu --json
  A=$(json_field_ "$T/out.txt" err_mm 2); B=$(json_field_ "$T/ev_o.json" err_mm 2)
  awk -v a="$A" -v b="$B" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * (a > b ? a : b) + 1e-6) }' && ok || bad "eval-fusion of one model: cpu $A vs onednn $B"
fi
expect_err "eval-fusion --backend gpu" "--backend: gpu not in {cpu,onednn}" "$BF" eval-fusion --data "$T/data" --model "$T/a.safetensors" --backend gpu

S=$(ls "$T/data/speech/"*.npy | head -1); E=$(ls "$T/data/expression/"*.npy | head -1)
expect_ok "fuse" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$S" --expression "$E" --out "$T/fused.npy"
expect_ok "fuse naive" "$BF" fuse --naive --data "$T/data" --speech "$S" --expression "$E" --out "$T/naive.npy"
expect_ok "fuse --backend cpu" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$S" --expression "$E" --backend cpu --out "$T/fused_cpu.npy"
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then  # the same model on both backends: float rounding apart
  /usr/bin/python3 - "$T/fused.npy" "$T/fused_cpu.npy" <<'PY' && ok || bad "fuse: default backend and --backend cpu differ"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = np.abs(a - b).max(); print("fuse default vs cpu: max diff %.3g" % d); sys.exit(0 if a.shape == b.shape and d < 1e-3 else 1)
PY
fi
expect_ok "fuse held frame + blend" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$S" --expression "$E:0.5" --expression "$E:0.5" --expression-frame 3 --intensity 0.8 --out "$T/held.npy"
[ -s "$T/fused.npy" ] && [ -s "$T/naive.npy" ] && [ -s "$T/held.npy" ] && ok || bad "fuse outputs missing"
expect_ok "eval-fusion" "$BF" eval-fusion --data "$T/data" --model "$T/a.safetensors" --model "$T/p.safetensors" --json
grep -q '"method": "naive sum of inputs"' "$T/out.txt" && grep -q '"method": "paper' "$T/out.txt" && ok || bad "eval-fusion JSON lacks rows"

# bad inputs: clear errors naming the file, no half-written outputs
expect_err "missing dataset" "$T/nope" "$BF" train-fusion --data "$T/nope" --out "$T/x.safetensors" --epochs 1
expect_err "missing speech file" "missing.npy: file not found" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$T/missing.npy" --expression "$E" --out "$T/x.npy"
head -c 300 "$T/a.safetensors" >"$T/trunc.safetensors"
expect_err "truncated model" "trunc.safetensors" "$BF" fuse --model "$T/trunc.safetensors" --data "$T/data" --speech "$S" --expression "$E" --out "$T/x.npy"
[ ! -e "$T/x.npy" ] && ok || bad "a failed fuse left an output file"
echo '{"bogus": 1}' >"$T/bogus.json"
expect_err "bad config key" "unknown config key 'bogus'" "$BF" train-fusion --data "$T/data" --out "$T/x.safetensors" --config "$T/bogus.json" --epochs 1
expect_err "expression frame out of range" "is past its" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$S" --expression "$E" --expression-frame 100000 --out "$T/x.npy"
expect_ok "gen other topology" "$BF" gen-data --tiny --grid 20 --out "$T/data2" --seed 3
expect_err "vertex count mismatch" "vertices" "$BF" eval-fusion --data "$T/data2" --model "$T/a.safetensors"
expect_err "model file is not safetensors" "speech_bases.npy:" "$BF" fuse --model "$T/data/truth/speech_bases.npy" --data "$T/data" --speech "$S" --expression "$E" --out "$T/x.npy"

# ---- units: a metres copy of the same data (as VOCAset/FLAME are) ------------------------------
# json_field FILE KEY ROW: the KEY number of the ROW-th (1-based) row of an eval-fusion --json output
json_field() { grep "\"$2\"" "$1" | sed -n "$3p" | sed 's/.*: *//; s/,$//'; }
# near A B REL: |A − B| <= REL·max(|A|, |B|) + 1e-6
near() { awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; n = b < 0 ? -b : b; if (n > m) m = n; exit !(d <= r * m + 1e-6) }'; }
expect_ok "gen-data --units m" "$BF" gen-data --tiny --out "$T/data_m" --seed 3 --units m
grep -qx m "$T/data_m/units.txt" && grep -qx mm "$T/data/units.txt" && ok || bad "units.txt missing or wrong"
expect_ok "train-fusion on metres" "$BF" train-fusion --data "$T/data_m" --out "$T/am.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8
grep -q "data in m (units.txt)" "$T/out.txt" && ok || bad "train-fusion does not say the data are in m"
# the same model (scaled): eval tables equal up to float rounding (2 epochs: no time to diverge)
expect_ok "eval mm" "$BF" eval-fusion --data "$T/data" --model "$T/a.safetensors" --json; cp "$T/out.txt" "$T/ev_mm.json"
expect_ok "eval m" "$BF" eval-fusion --data "$T/data_m" --model "$T/am.safetensors" --json; cp "$T/out.txt" "$T/ev_m.json"
for k in err_mm gap_mm lve_mm lve_sq_mm2; do for r in 1 2; do
  A=$(json_field "$T/ev_mm.json" $k $r); B=$(json_field "$T/ev_m.json" $k $r)
  near "$A" "$B" 0.01 && ok || bad "eval-fusion $k row $r: mm data $A vs metres data $B"
done; done
expect_ok "eval table in m" "$BF" eval-fusion --data "$T/data_m" --model "$T/am.safetensors"
grep -q "scores in mm, data in m" "$T/out.txt" && ok || bad "eval-fusion table does not name the units"
# a model trained in m, run on mm data (and the mm model on metres data): the unit follows the data
expect_ok "eval mm model on m data" "$BF" eval-fusion --data "$T/data_m" --model "$T/a.safetensors" --json
near "$(json_field "$T/out.txt" err_mm 2)" "$(json_field "$T/ev_mm.json" err_mm 2)" 0.01 && ok || bad "mm model on metres data scores differently"
Sm="$T/data_m/speech/$(basename "$S")"; Em="$T/data_m/expression/$(basename "$E")"
expect_ok "fuse in m" "$BF" fuse --model "$T/am.safetensors" --data "$T/data_m" --speech "$Sm" --expression "$Em" --out "$T/fused_m.npy"
grep -q "in m (units.txt)" "$T/out.txt" && ok || bad "fuse does not say its output is in m"
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then  # the fused output × 1000 is the mm output
  /usr/bin/python3 - "$T/fused.npy" "$T/fused_m.npy" <<'PY' && ok || bad "fused output in m × 1000 differs from the output in mm"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2]) * 1000.0
d = np.abs(a - b).max(); print("fuse mm vs m x1000: max diff %.3g mm" % d); sys.exit(0 if d < 2e-3 else 1)
PY
fi
# auto-detection: without units.txt a template under 1 in extent is metres; a 5–20 one is refused
cp -r "$T/data_m" "$T/data_auto" && rm "$T/data_auto/units.txt"
expect_ok "auto units" "$BF" eval-fusion --data "$T/data_auto" --model "$T/am.safetensors"
grep -q "data in m (auto: template extent" "$T/out.txt" && ok || bad "auto-detection did not find metres"
awk '$1 == "v" { $2 *= 50; $3 *= 50; $4 *= 50 } { print }' "$T/data_m/template.obj" >"$T/data_auto/template.obj"
expect_err "ambiguous units" "cannot tell the length unit" "$BF" eval-fusion --data "$T/data_auto" --model "$T/am.safetensors"
expect_err "bad units.txt" "units.txt: unknown length unit 'inch'" sh -c "echo inch >'$T/data_auto/units.txt' && '$BF' eval-fusion --data '$T/data_auto' --model '$T/am.safetensors'"

# the fusion module beats the naive sum on data in metres (a small but learnable setting: 6
# subjects, map 32, 6 epochs), and the metres and mm copies give the same table within noise
cat >"$T/cfg32.json" <<'J'
{"map_size": 32, "channels": [8, 16, 32], "k_a": 8, "k_e": 8}
J
expect_ok "gen 6 subjects mm" "$BF" gen-data --tiny --subjects 6 --sentences 4 --out "$T/d6" --seed 3
expect_ok "gen 6 subjects m" "$BF" gen-data --tiny --subjects 6 --sentences 4 --out "$T/d6m" --seed 3 --units m
expect_ok "train 6 subjects mm" "$BF" train-fusion --data "$T/d6" --out "$T/d6.safetensors" --config "$T/cfg32.json" --epochs 6 --batch 16 --quiet
expect_ok "train 6 subjects m" "$BF" train-fusion --data "$T/d6m" --out "$T/d6m.safetensors" --config "$T/cfg32.json" --epochs 6 --batch 16 --quiet
expect_ok "eval 6 subjects mm" "$BF" eval-fusion --data "$T/d6" --model "$T/d6.safetensors" --json; cp "$T/out.txt" "$T/ev6.json"
expect_ok "eval 6 subjects m" "$BF" eval-fusion --data "$T/d6m" --model "$T/d6m.safetensors" --json; cp "$T/out.txt" "$T/ev6m.json"
for k in err_mm gap_mm lve_mm; do
  N=$(json_field "$T/ev6m.json" $k 1); F=$(json_field "$T/ev6m.json" $k 2); Fmm=$(json_field "$T/ev6.json" $k 2)
  awk -v f="$F" -v n="$N" 'BEGIN { exit !(f < 0.75 * n) }' && ok || bad "metres data: fusion $k $F does not beat the naive sum $N"
  # training amplifies rounding differences (within noise: seeds 1–3 here give err 0.20–0.29 mm, gap 0.66–1.11 mm)
  near "$F" "$Fmm" 0.4 && ok || bad "metres vs mm data: $k $F vs $Fmm"
done

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
