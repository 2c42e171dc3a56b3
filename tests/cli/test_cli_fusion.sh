#!/usr/bin/env bash
# End-to-end test of the fusion commands on a tiny procedural dataset, including bad inputs.
# usage: test_cli_fusion.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"

cat >"$T/cfg.json" <<'J'
{"map_size": 16, "channels": [4, 8], "k_a": 4, "k_e": 4}
J
expect_ok "gen-data" "$BF" gen-data --tiny --out "$T/data" --seed 3
expect_ok "train-fusion" "$BF" train-fusion --data "$T/data" --out "$T/a.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --quiet
expect_ok "train-fusion paper variant" "$BF" train-fusion --data "$T/data" --out "$T/p.safetensors" --config "$T/cfg.json" --variant paper --epochs 1 --batch 8 --quiet
# resume: 1 epoch + resume to 2 epochs must equal 2 epochs straight
expect_ok "train 1 epoch" "$BF" train-fusion --data "$T/data" --out "$T/b1.safetensors" --config "$T/cfg.json" --epochs 1 --batch 8 --checkpoint "$T/ck.safetensors" --quiet
expect_ok "resume to 2" "$BF" train-fusion --data "$T/data" --out "$T/b.safetensors" --config "$T/cfg.json" --epochs 2 --batch 8 --checkpoint "$T/ck.safetensors" --resume --quiet
if cmp -s "$T/a.safetensors" "$T/b.safetensors"; then ok; else bad "resumed training differs from uninterrupted training"; fi

S=$(ls "$T/data/speech/"*.npy | head -1); E=$(ls "$T/data/expression/"*.npy | head -1)
expect_ok "fuse" "$BF" fuse --model "$T/a.safetensors" --data "$T/data" --speech "$S" --expression "$E" --out "$T/fused.npy"
expect_ok "fuse naive" "$BF" fuse --naive --data "$T/data" --speech "$S" --expression "$E" --out "$T/naive.npy"
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

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
