#!/usr/bin/env bash
# The main job: install what is missing, build, then
#   1. generate the procedural two-domain dataset (speech with an expression leak, expressions with
#      a mouth leak, and the clean truth),
#   2. train the fusion module (ours and the paper's variant, plus the ablations) on 2 cores,
#   3. fuse a test sentence with a smile, and print the ablation table measured against the truth,
#   4. animate a typed sentence with an emotion: espeak-ng speech → the shipped audio model
#      (weights/audio_small.safetensors, no training) → fused with a smile, and score the audio
#      model against a mean-face baseline on held-out speakers,
#   6. render it: an MP4 with sound (fusion model beside the naive sum) and a PNG contact sheet.
# It builds only what it runs (the blendfuse tool); ./scripts/test.sh builds everything.
# DEMO_EPOCHS (default 3) and DEMO_OUT (default out/demo) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=blendfuse_cli ./scripts/build.sh
BIN=${BUILD_DIR:-build}/blendfuse
OUT=${DEMO_OUT:-out/demo}
EPOCHS=${DEMO_EPOCHS:-3}
CFG=examples/configs/fusion_demo.json
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

"$BIN" info
echo "== 1. procedural data"
"$BIN" gen-data --force --out "$OUT/data" --seed 1  # --force: a rerun replaces the last run's dataset

echo "== 2. training the fusion module ($EPOCHS epochs per variant, config $CFG)"
for v in full paper no-sparsity no-laplace no-map; do
  echo "-- variant $v"
  "$BIN" train-fusion --data "$OUT/data" --out "$OUT/fusion_$v.safetensors" --config "$CFG" \
         --variant "$v" --epochs "$EPOCHS" --seed 1
done

echo "== 3. fusing a test sentence with a smile"
TEST_SUBJ=$(tr -d ' \n' <"$OUT/data/split.json" | sed -n 's/.*"test":\["\([^"]*\)".*/\1/p')
SPEECH=$(ls "$OUT/data/speech/${TEST_SUBJ}_"*.npy | head -1)
SMILE=$(ls "$OUT/data/expression/${TEST_SUBJ}_smile"*.npy | head -1)
"$BIN" fuse --model "$OUT/fusion_full.safetensors" --data "$OUT/data" --speech "$SPEECH" --expression "$SMILE" --out "$OUT/fused_smile.npy"
"$BIN" fuse --naive --data "$OUT/data" --speech "$SPEECH" --expression "$SMILE" --out "$OUT/naive_smile.npy"

echo "== 4. ablation table (test subjects, against the clean truth)"
"$BIN" eval-fusion --data "$OUT/data" --markdown "$OUT/ablation.md" \
  --model "$OUT/fusion_full.safetensors" --model "$OUT/fusion_paper.safetensors" \
  --model "$OUT/fusion_no-sparsity.safetensors" --model "$OUT/fusion_no-laplace.safetensors" \
  --model "$OUT/fusion_no-map.safetensors"
echo "== 5. a typed sentence with an emotion (shipped audio model, no audio training)"
AUDIO_MODEL=weights/audio_small.safetensors
# The audio model's topology (grid 40) and voices: speech with espeak-ng audio + expressions.
"$BIN" gen-data --force --audio --grid 40 --sentences 2 --out "$OUT/audio_data" --seed 1
"$BIN" train-fusion --data "$OUT/audio_data" --out "$OUT/fusion_audio.safetensors" --config "$CFG" \
       --epochs "$EPOCHS" --seed 1 --quiet
SENTENCE="Maybe the brown puppies jump over my blue map."
SMILE_A="$OUT/audio_data/expression/P08_smile01.npy"
"$BIN" speak --model "$AUDIO_MODEL" --text "$SENTENCE" \
       --fusion "$OUT/fusion_audio.safetensors" --expression "$SMILE_A" \
       --intensity 0.8 --out "$OUT/speak_smile.npy" --out-wav "$OUT/speak_smile.wav"
"$BIN" speak --model "$AUDIO_MODEL" --text "$SENTENCE" --naive --expression "$SMILE_A" \
       --intensity 0.8 --out "$OUT/speak_naive.npy"
"$BIN" speak --model "$AUDIO_MODEL" --text "$SENTENCE" --stream \
       --out "$OUT/speak_stream.npy"
"$BIN" eval-audio --model "$AUDIO_MODEL" --data "$OUT/audio_data" --stream

echo "== 6. rendering the typed sentence: fusion model beside the naive sum"
RENDER_IN=(--in "$OUT/speak_smile.npy" --caption "blendfuse: speech + smile"
           --in "$OUT/speak_naive.npy" --caption "naive sum")
"$BIN" render --data "$OUT/audio_data" --absolute "${RENDER_IN[@]}" --wav "$OUT/speak_smile.wav" \
       --out "$OUT/talking_face.mp4"
"$BIN" render --data "$OUT/audio_data" --absolute "${RENDER_IN[@]}" --out "$OUT/talking_face.png"
echo "demo: outputs in $OUT (fused_smile.npy, naive_smile.npy, ablation.md, speak_smile.npy/.wav, models)"
echo "demo: watch  $OUT/talking_face.mp4   (video with sound: the fusion model beside the naive sum)"
echo "demo: look   $OUT/talking_face.png   (contact sheet of evenly spaced frames)"
