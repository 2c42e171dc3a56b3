#!/usr/bin/env bash
# End-to-end test of the audio commands on a tiny procedural dataset with espeak-ng speech,
# including bad inputs. Without libespeak-ng only the clear --audio error is checked.
# usage: test_cli_audio.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"

if ! "$BF" gen-data --tiny --audio --out "$T/data" --seed 3 >"$T/out.txt" 2>&1; then
  if grep -qF "needs libespeak-ng" "$T/out.txt"; then echo "no libespeak-ng: checked the --audio error only"; exit 0; fi
  cat "$T/out.txt"; echo "FAIL: gen-data --audio"; exit 1
fi
ok
ls "$T/data/speech/"*.wav >/dev/null 2>&1 && ok || bad "gen-data --audio wrote no .wav"
# same seed → identical audio
expect_ok "gen-data --audio again" "$BF" gen-data --tiny --audio --out "$T/data2" --seed 3
if diff -r "$T/data" "$T/data2" >/dev/null; then ok; else bad "gen-data --audio is not reproducible"; fi

tiny_audio_config "$T/cfg.json"
expect_ok "train-audio" "$BF" train-audio --data "$T/data" --out "$T/a.safetensors" --config "$T/cfg.json" --epochs 2 --quiet
[ -s "$T/a.safetensors" ] && ok || bad "train-audio wrote no model"
expect_ok "train-audio with lip losses" "$BF" train-audio --data "$T/data" --out "$T/l.safetensors" --config "$T/cfg.json" --epochs 2 --quiet \
  --lip-weight 2 --gap-weight 1 --gap-delta 0.5 --velocity-weight 0.5 --lr-final 1e-4 --sampling-ramp 0.3 --scheduled-sampling 1 \
  --augment-speed 0.1 --augment-gain 0.1 --speed-perturb 0.9,1.1
[ -s "$T/l.safetensors" ] && ok || bad "train-audio with lip losses wrote no model"
expect_err "gap loss without lip pairs" "nope.npy" "$BF" train-audio --data "$T/data" --out "$T/z.safetensors" --config "$T/cfg.json" --epochs 1 --quiet \
  --gap-weight 1 --lip-pairs "$T/nope.npy"
expect_err "gap loss with a wrong pairs file" "speech_bases.npy" "$BF" train-audio --data "$T/data" --out "$T/z.safetensors" --config "$T/cfg.json" --epochs 1 --quiet \
  --gap-weight 1 --lip-pairs "$T/data/truth/speech_bases.npy"
[ ! -e "$T/z.safetensors" ] && ok || bad "a failed train-audio left a model"
W=$(ls "$T/data/speech/"*.wav | head -1)
expect_ok "speak --wav" "$BF" speak --model "$T/a.safetensors" --wav "$W" --out "$T/s.npy"
expect_ok "speak --stream" "$BF" speak --model "$T/a.safetensors" --wav "$W" --stream --out "$T/s2.npy"
expect_ok "speak --backend cpu" "$BF" speak --model "$T/a.safetensors" --wav "$W" --backend cpu --out "$T/s3.npy"
[ "$(wc -c < "$T/s3.npy")" = "$(wc -c < "$T/s.npy")" ] && ok || bad "speak --backend cpu: output size differs"
expect_err "bad backend" "--backend" "$BF" speak --model "$T/a.safetensors" --wav "$W" --backend gpu --out "$T/x.npy"
# --backend on the other audio commands: the reference trains reproducibly (byte-identical model
# files), every backend's model file loads everywhere, eval-audio and features run on both
expect_ok "train-audio --backend cpu" "$BF" train-audio --data "$T/data" --out "$T/c1.safetensors" --config "$T/cfg.json" --epochs 1 --quiet --backend cpu
expect_ok "train-audio --backend cpu again" "$BF" train-audio --data "$T/data" --out "$T/c2.safetensors" --config "$T/cfg.json" --epochs 1 --quiet --backend cpu
cmp -s "$T/c1.safetensors" "$T/c2.safetensors" && ok || bad "train-audio --backend cpu is not reproducible"
expect_ok "speak --backend cpu on a reference-trained model" "$BF" speak --model "$T/c1.safetensors" --wav "$W" --backend cpu --out "$T/c1.npy"
expect_err "train-audio bad backend" "--backend" "$BF" train-audio --data "$T/data" --out "$T/z.safetensors" --config "$T/cfg.json" --epochs 1 --backend gpu
expect_ok "eval-audio --backend cpu" "$BF" eval-audio --model "$T/a.safetensors" --data "$T/data" --json --backend cpu
grep -q '"lve_mm"' "$T/out.txt" && ok || bad "eval-audio --backend cpu JSON lacks rows"
expect_err "eval-audio bad backend" "--backend" "$BF" eval-audio --model "$T/a.safetensors" --data "$T/data" --backend gpu
expect_ok "features --backend cpu" "$BF" features --model "$T/a.safetensors" --wav "$W" --backend cpu --out "$T/f1.npy"
expect_ok "features (default backend)" "$BF" features --model "$T/a.safetensors" --wav "$W" --out "$T/f2.npy"
[ -s "$T/f1.npy" ] && [ "$(wc -c < "$T/f1.npy")" = "$(wc -c < "$T/f2.npy")" ] && ok || bad "features: backends give different shapes"
expect_err "features bad backend" "--backend" "$BF" features --model "$T/a.safetensors" --wav "$W" --backend gpu --out "$T/x.npy"
expect_ok "speak --text" "$BF" speak --model "$T/a.safetensors" --text "Bob bought maybe five apples." --out "$T/t.npy" --out-wav "$T/t.wav"
[ -s "$T/s.npy" ] && [ -s "$T/s2.npy" ] && [ -s "$T/t.npy" ] && [ -s "$T/t.wav" ] && ok || bad "speak outputs missing"
expect_ok "eval-audio" "$BF" eval-audio --model "$T/a.safetensors" --data "$T/data" --json
grep -q '"method": "mean face' "$T/out.txt" && grep -q '"lve_mm"' "$T/out.txt" && ok || bad "eval-audio JSON lacks rows"
cp "$T/out.txt" "$T/ev_mm.json"
# units: the audio model works in mm; a metres copy of the data scores the same (in mm) and speak
# --data answers in the data's unit
expect_ok "gen-data --audio --units m" "$BF" gen-data --tiny --audio --out "$T/data_m" --seed 3 --units m
expect_ok "eval-audio on metres" "$BF" eval-audio --model "$T/a.safetensors" --data "$T/data_m" --json
A=$(grep '"lve_mm"' "$T/ev_mm.json" | head -1 | sed 's/.*: *//; s/,$//'); B=$(grep '"lve_mm"' "$T/out.txt" | head -1 | sed 's/.*: *//; s/,$//')
awk -v a="$A" -v b="$B" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * a + 1e-6) }' && ok || bad "eval-audio LVE: mm data $A vs metres data $B"
expect_ok "speak --data metres" "$BF" speak --model "$T/a.safetensors" --wav "$W" --data "$T/data_m" --out "$T/sm.npy"
grep -q "in m)" "$T/out.txt" && ok || bad "speak --data metres does not say its output is in m"

# bad inputs: clear errors naming the file, no half-written outputs
expect_err "missing wav" "nope.wav" "$BF" speak --model "$T/a.safetensors" --wav "$T/nope.wav" --out "$T/x.npy"
head -c 30 "$W" >"$T/corrupt.wav"
expect_err "corrupt wav" "corrupt.wav" "$BF" speak --model "$T/a.safetensors" --wav "$T/corrupt.wav" --out "$T/x.npy"
expect_err "wrong model file" "speech_bases.npy:" "$BF" speak --model "$T/data/truth/speech_bases.npy" --wav "$W" --out "$T/x.npy"
expect_err "unknown subject" "unknown subject 'Nobody'" "$BF" speak --model "$T/a.safetensors" --wav "$W" --subject Nobody --out "$T/x.npy"
head -c 500 "$T/a.safetensors" >"$T/trunc.safetensors"
expect_err "truncated model" "trunc.safetensors" "$BF" eval-audio --model "$T/trunc.safetensors" --data "$T/data"
[ ! -e "$T/x.npy" ] && ok || bad "a failed speak left an output file"
cp -r "$T/data" "$T/nowav"; rm "$T/nowav/speech/"*.wav
expect_err "data without wav" "has a matching .wav" "$BF" train-audio --data "$T/nowav" --out "$T/y.safetensors" --epochs 1
[ ! -e "$T/y.safetensors" ] && ok || bad "a failed train-audio left a model"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
