# Shared harness of the command-line tests (sourced): BF = the blendfuse binary ($1), T = a
# temporary folder removed on exit, ok/bad counters, expect_ok / expect_err, finish.
set -u
BF=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1
fails=0; passes=0
ok()   { passes=$((passes+1)); }
bad()  { echo "FAIL: $*"; fails=$((fails+1)); }
# expect_ok DESC cmd...: must succeed
expect_ok()  { local d=$1; shift; if "$@" >"$T/out.txt" 2>&1; then ok; else bad "$d"; cat "$T/out.txt"; fi; }
# expect_err DESC NEEDLE cmd...: must exit non-zero and print NEEDLE
expect_err() { local d=$1 n=$2; shift 2; if "$@" >"$T/out.txt" 2>&1; then bad "$d (succeeded)"; elif grep -qF -- "$n" "$T/out.txt"; then ok; else bad "$d (message lacks '$n')"; cat "$T/out.txt"; fi; }
# tiny_audio_config FILE: a very small audio-model config (wav2vec2 + FaceFormer) for train-audio
tiny_audio_config() {
  cat >"$1" <<'J'
{"wav2vec2": {"conv_dim": [16, 16, 16, 16, 16, 16, 16], "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "num_conv_pos_embeddings": 8,
              "num_conv_pos_embedding_groups": 2},
 "faceformer": {"feature_dim": 16, "num_heads": 2, "dim_feedforward": 16}}
J
}
