#!/usr/bin/env bash
# README.md's embedding snippet (built from the README text by tests/CMakeLists.txt) must run and
# give what `blendfuse speak --fusion` gives for the same inputs. Tiny models made here.
# usage: test_readme_snippet.sh BLENDFUSE_BINARY README_SNIPPET_BINARY
source "$(dirname "$0")/lib.sh"
SNIP=$2
if ! "$BF" gen-data --tiny --audio --out "$T/data" --seed 5 >"$T/out.txt" 2>&1; then
  if grep -qF "needs libespeak-ng" "$T/out.txt"; then echo "no libespeak-ng: skipped"; exit 0; fi
  cat "$T/out.txt"; echo "FAIL: gen-data --audio"; exit 1
fi
cat >"$T/a.json" <<'J'
{"wav2vec2": {"conv_dim": [16, 16, 16, 16, 16, 16, 16], "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "num_conv_pos_embeddings": 8,
              "num_conv_pos_embedding_groups": 2},
 "faceformer": {"feature_dim": 16, "num_heads": 2, "dim_feedforward": 16}}
J
expect_ok "train-audio" "$BF" train-audio --data "$T/data" --out "$T/a.safetensors" --config "$T/a.json" --epochs 1 --quiet
echo '{"map_size": 16, "channels": [4, 8], "k_a": 4, "k_e": 4}' >"$T/f.json"
expect_ok "train-fusion" "$BF" train-fusion --data "$T/data" --out "$T/f.safetensors" --config "$T/f.json" \
  --epochs 1 --batch 8 --seed 1 --quiet
# the snippet's speaking style and neutral face are the model's first subject: use its expression
S=$(tr -d ' \n' <"$T/data/split.json" | sed -n 's/.*"train":\["\([^"]*\)".*/\1/p')
E=$(ls "$T/data/expression/${S}_"*.npy | head -1)
W=$(ls "$T/data/speech/"*.wav | head -1)
expect_ok "README snippet" "$SNIP" "$W" "$T/a.safetensors" "$T/f.safetensors" "$E" "$T/snip.npy"
grep -qF "frames of" "$T/out.txt" && ok || bad "README snippet printed no summary"
expect_ok "speak, same inputs" "$BF" speak --model "$T/a.safetensors" --wav "$W" --backend cpu \
  --fusion "$T/f.safetensors" --expression "$E" --intensity 0.8 --out "$T/speak.npy"
if cmp -s "$T/snip.npy" "$T/speak.npy"; then ok; else bad "README snippet and speak --fusion differ"; fi
expect_err "README snippet, missing model" "nope.safetensors" "$SNIP" "$W" "$T/nope.safetensors" "$T/f.safetensors" "$E" "$T/x.npy"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
