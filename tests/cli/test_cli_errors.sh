#!/usr/bin/env bash
# The bad-input catalogue (docs/errors.md) end to end: every case must exit non-zero, print a
# message naming the file or option, and leave no output behind. Tiny data only (a few seconds).
# usage: test_cli_errors.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"
W="$(cd "$(dirname "$0")/../.." && pwd)/weights/audio_small.safetensors"  # 1602 vertices

# expect_fail DESC NEEDLE OUTPUT cmd...: must fail, print NEEDLE, and leave no OUTPUT file
expect_fail() {
  local d=$1 n=$2 o=$3; shift 3
  expect_err "$d" "$n" "$@"
  if [ -n "$o" ] && [ -e "$o" ]; then bad "$d: left $o behind"; rm -rf "$o"; else ok; fi
}
le16() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))"; }
le32() { le16 $(($1 & 65535)); le16 $((($1 >> 16) & 65535)); }
# mkwav FILE RATE BITS FORMAT(1 pcm, 3 float) < data: a mono WAV around the data on stdin
mkwav() {
  local f=$1 rate=$2 bits=$3 fmt=$4 tmp; tmp=$(mktemp "$T/wavdata.XXXX"); cat >"$tmp"
  local n; n=$(wc -c <"$tmp")
  { printf 'RIFF'; le32 $((36 + n)); printf 'WAVEfmt '; le32 16; le16 "$fmt"; le16 1; le32 "$rate"
    le32 $((rate * bits / 8)); le16 $((bits / 8)); le16 "$bits"; printf 'data'; le32 "$n"; cat "$tmp"; } >"$f"
  rm -f "$tmp"
}
tone() { yes 'abcdefgh' | tr -d '\n' | head -c "$1"; }  # deterministic non-silent bytes

# ---- data: a tiny procedural dataset (406 vertices) and a tiny fusion model ----
cat >"$T/cfg.json" <<'J'
{"map_size": 16, "channels": [4, 8], "k_a": 4, "k_e": 4}
J
D="$T/data"
expect_ok "gen-data" "$BF" gen-data --tiny --grid 20 --sentences 1 --out "$D" --seed 3
expect_ok "train-fusion" "$BF" train-fusion --data "$D" --out "$T/m.safetensors" --config "$T/cfg.json" --epochs 2 --batch 16 --checkpoint "$T/ck.safetensors" --quiet
S=$(ls "$D/speech/"*.npy | head -1); E=$(ls "$D/expression/"*.npy | head -1)
tone 32000 | mkwav "$T/x.wav" 16000 16 1       # 1 s of 16 kHz audio

# ---- gen-data ----
expect_fail "gen-data negative --subjects" "--subjects must be an integer in [3, 1000], got -2" "$T/g1" "$BF" gen-data --tiny --subjects -2 --out "$T/g1"
expect_fail "gen-data negative --grid" "--grid must be an integer in [15, 1000], got -5" "$T/g1" "$BF" gen-data --tiny --grid -5 --out "$T/g1"
expect_fail "gen-data --sentences 0" "--sentences must be an integer in [1, 1000], got 0" "$T/g1" "$BF" gen-data --tiny --sentences 0 --out "$T/g1"
expect_fail "gen-data --seed -1" "--seed must be a non-negative integer, got '-1'" "$T/g1" "$BF" gen-data --tiny --seed -1 --out "$T/g1"
before=$(ls -R "$D" | md5sum)
expect_err "gen-data into an existing dataset" "is an existing non-empty folder" "$BF" gen-data --tiny --grid 15 --out "$D"
[ "$(ls -R "$D" | md5sum)" = "$before" ] && ok || bad "gen-data changed an existing folder it refused"
mkdir -p "$T/notdata"; echo keep >"$T/notdata/keep.txt"
expect_err "gen-data --force on a folder that is no dataset" "does not hold a dataset" "$BF" gen-data --tiny --force --out "$T/notdata"
[ -e "$T/notdata/keep.txt" ] && ok || bad "gen-data --force removed a non-dataset folder"
cp -r "$D" "$T/regen"; touch "$T/regen/speech/P09_stale.npy"
expect_ok "gen-data --force replaces a dataset" "$BF" gen-data --tiny --grid 15 --sentences 1 --force --out "$T/regen" --seed 3
[ ! -e "$T/regen/speech/P09_stale.npy" ] && ok || bad "gen-data --force kept an old file"
expect_fail "gen-data --units inch" "--units: inch not in {mm,cm,m}" "$T/g1" "$BF" gen-data --tiny --units inch --out "$T/g1"
expect_fail "gen-data --units auto (a written unit must be named)" "--units: auto not in {mm,cm,m}" "$T/g1" "$BF" gen-data --tiny --units auto --out "$T/g1"
expect_err "gen-data --units m into an existing dataset" "is an existing non-empty folder" "$BF" gen-data --tiny --grid 15 --sentences 1 --units m --out "$T/regen"
grep -qx mm "$T/regen/units.txt" && ok || bad "a refused gen-data --units m changed units.txt"
expect_ok "gen-data --force --units m replaces a mm dataset" "$BF" gen-data --tiny --grid 15 --sentences 1 --force --units m --out "$T/regen" --seed 3
grep -qx m "$T/regen/units.txt" && [ ! -e "$T/regen/speech/P09_stale.npy" ] && ok || bad "gen-data --force --units m: units.txt not m or stale files"

# ---- units: the --units option of the dataset readers and units.txt ----
for cmd in "train-fusion --out $T/o.safetensors" "fuse --naive --speech $S --expression $E --out $T/f.npy" "eval-fusion --model $T/m.safetensors" "train-audio --out $T/a.safetensors" "eval-audio --model $T/m.safetensors"; do
  # shellcheck disable=SC2086
  expect_fail "${cmd%% *} --units furlong" "--units: furlong not in {auto,mm,cm,m}" "$T/o.safetensors" "$BF" $cmd --data "$D" --units furlong
done
[ ! -e "$T/f.npy" ] && [ ! -e "$T/a.safetensors" ] && ok || bad "--units furlong left an output"
cp -r "$D" "$T/ubad"
for c in "inch|unknown length unit 'inch' (expected mm, cm or m)" "mm m|expected one unit word (mm, cm or m), got more than one" "# nothing|no unit in file (expected mm, cm or m)"; do
  printf '%s\n' "${c%%|*}" >"$T/ubad/units.txt"
  expect_fail "units.txt '${c%%|*}'" "ubad/units.txt: ${c#*|}" "$T/md.md" "$BF" eval-fusion --data "$T/ubad" --model "$T/m.safetensors" --markdown "$T/md.md"
done
printf 'inch\n' >"$T/ubad/units.txt"
expect_fail "units.txt 'inch' with --units mm (the file is still read)" "ubad/units.txt: unknown length unit 'inch'" "$T/f.npy" "$BF" fuse --naive --data "$T/ubad" --speech "$S" --expression "$E" --units mm --out "$T/f.npy"
expect_fail "train-fusion on a bad units.txt" "ubad/units.txt: unknown length unit 'inch'" "$T/o.safetensors" "$BF" train-fusion --data "$T/ubad" --out "$T/o.safetensors" --config "$T/cfg.json" --quiet
[ ! -e "$T/o.safetensors.ckpt" ] && ok || bad "train-fusion on a bad units.txt left a checkpoint"
# no units.txt and a template between 1 and 20 in extent: neither a face in metres nor in mm
rm "$T/ubad/units.txt"
awk '$1 == "v" { $2 *= 0.05; $3 *= 0.05; $4 *= 0.05 } { print }' "$D/template.obj" >"$T/ubad/template.obj"
expect_fail "ambiguous template size" "ubad/template.obj: cannot tell the length unit: the template's largest extent is" "$T/md.md" "$BF" eval-fusion --data "$T/ubad" --model "$T/m.safetensors" --markdown "$T/md.md"
grep -qF "write the unit (mm, cm or m) to units.txt in the dataset folder or pass --units" "$T/out.txt" && ok || bad "ambiguous units message lacks the remedy"
expect_ok "ambiguous template size settled by --units mm" "$BF" fuse --naive --data "$T/ubad" --speech "$S" --expression "$E" --units mm --out "$T/f.npy"
grep -qF "in mm (--units)" "$T/out.txt" && ok || bad "fuse --units mm does not say where the unit came from"
rm -f "$T/f.npy"

# ---- train-fusion ----
TF=("$BF" train-fusion --data "$D" --config "$T/cfg.json" --quiet)
expect_fail "--epochs 0" "train-fusion: --epochs must be an integer in [1, 1000000], got 0" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --epochs 0
expect_fail "--lr -1" "train-fusion: --lr must be a finite number in [1e-12, 1], got -1" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --lr -1
expect_fail "--lr nan" "train-fusion: --lr must be a finite number" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --lr nan
expect_fail "--lr 1e10" "train-fusion: --lr must be a finite number" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --lr 1e10
expect_fail "--max-minutes nan" "train-fusion: --max-minutes must be a finite number" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --max-minutes nan
expect_fail "--seed -1" "--seed must be a non-negative integer" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --seed -1
expect_fail "--k-a 100000" "k_a and k_e must be integers in [1, 1024], got k_a 100000" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --k-a 100000
expect_fail "--map-size 64, default channels" "map_size 64 with 6 stride-2 conv blocks leaves a 1x1 map" "$T/o.safetensors" "$BF" train-fusion --data "$D" --out "$T/o.safetensors" --map-size 64 --quiet
echo '{"map_size": 16, "channels": [4, 8], "k_a": 2.5}' >"$T/frac.json"
expect_fail "config k_a 2.5" "frac.json: k_a must be an integer, got 2.5" "$T/o.safetensors" "$BF" train-fusion --data "$D" --out "$T/o.safetensors" --config "$T/frac.json" --quiet
echo '{"map_size": 16, "channels": []}' >"$T/empty.json"
expect_fail "config channels []" "empty.json: DfmConfig: channels must list 1 to 12 conv blocks" "$T/o.safetensors" "$BF" train-fusion --data "$D" --out "$T/o.safetensors" --config "$T/empty.json" --quiet
echo '{"map_size": 16, "channels": [4, -8]}' >"$T/neg.json"
expect_fail "config negative channels" "neg.json: DfmConfig: channels entries must be in [1, 4096], got -8" "$T/o.safetensors" "$BF" train-fusion --data "$D" --out "$T/o.safetensors" --config "$T/neg.json" --quiet
echo '{"map_size": 16, "channels": [4, 8], "lambda_laplace": -1}' >"$T/negl.json"
expect_fail "config negative loss weight" "negl.json: DfmConfig: lambda_laplace must be a finite number in [0, 1e6], got -1" "$T/o.safetensors" "$BF" train-fusion --data "$D" --out "$T/o.safetensors" --config "$T/negl.json" --quiet
cp "$T/cfg.json" "$T/cfg_copy.json"
expect_err "--out = --config" "train-fusion: --out is the same file as the input --config" "${TF[@]}" --out "$T/cfg.json"
cmp -s "$T/cfg.json" "$T/cfg_copy.json" && ok || bad "train-fusion overwrote its --config"
expect_fail "--out X --checkpoint X" "--checkpoint is the same file as --out" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --checkpoint "$T/o.safetensors"
mkdir -p "$T/adir"
expect_err "--out an existing folder" "adir: train-fusion: --out is an existing folder" "${TF[@]}" --out "$T/adir" --epochs 1
[ -z "$(ls "$T/adir")" ] && [ ! -e "$T/adir.ckpt" ] && ok || bad "train-fusion --out DIR left files"
expect_fail "--out in a missing folder" "folder '$T/nodir' does not exist" "$T/nodir" "${TF[@]}" --out "$T/nodir/o.safetensors" --epochs 1
expect_ok "--batch larger than the data is capped" "${TF[@]}" --out "$T/big.safetensors" --epochs 1 --batch 100000
grep -q "using --batch" "$T/out.txt" && ok || bad "--batch cap not reported"
expect_fail "--resume past --epochs" "ck.safetensors: checkpoint has 2 epochs done, more than the requested --epochs 1" "$T/o.safetensors" "$BF" train-fusion --data "$D" --config "$T/cfg.json" --quiet --out "$T/o.safetensors" --epochs 1 --checkpoint "$T/ck.safetensors" --resume --batch 16
# (equal epochs is fine: nothing left to train)
cp "$T/ck.safetensors" "$T/ck_neg.safetensors"
LC_ALL=C sed -i 's/"adam_step":"[0-9]/"adam_step":"-/' "$T/ck_neg.safetensors"
expect_fail "--resume with adam_step < 0" "ck_neg.safetensors: metadata 'adam_step' is negative" "$T/o.safetensors" "${TF[@]}" --out "$T/o.safetensors" --epochs 3 --batch 16 --checkpoint "$T/ck_neg.safetensors" --resume

# ---- fuse ----
FU=("$BF" fuse --model "$T/m.safetensors" --data "$D" --speech "$S")
cp "$T/m.safetensors" "$T/m_copy.safetensors"; cp "$S" "$T/s_copy.npy"
expect_err "fuse --out = --model" "fuse: --out is the same file as the input --model" "${FU[@]}" --expression "$E" --out "$T/m.safetensors"
expect_err "fuse --out = --speech" "fuse: --out is the same file as the input --speech" "${FU[@]}" --expression "$E" --out "$S"
expect_err "fuse --out = --expression" "fuse: --out is the same file as the input --expression" "${FU[@]}" --expression "$E:0.5" --out "$E"
cmp -s "$T/m.safetensors" "$T/m_copy.safetensors" && cmp -s "$S" "$T/s_copy.npy" && ok || bad "fuse overwrote an input"
for v in nan inf -1 1e300; do
  expect_fail "fuse --intensity $v" "fuse: --intensity must be a finite number in [0, 10]" "$T/f.npy" "${FU[@]}" --expression "$E" --intensity "$v" --out "$T/f.npy"
done
for v in nan inf 1e300 -2; do
  expect_fail "fuse expression weight $v" "fuse: --expression $E:$v: the weight must be a finite number in [0, 10]" "$T/f.npy" "${FU[@]}" --expression "$E:$v" --out "$T/f.npy"
done
expect_fail "fuse --expression-frame -5" "fuse: --expression-frame must be an integer in [0," "$T/f.npy" "${FU[@]}" --expression "$E" --expression-frame -5 --out "$T/f.npy"
# a 0-frame sequence
{ printf '\x93NUMPY\x01\x00'; le16 118; printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 406, 3), }"; } >"$T/P01_empty.npy"
expect_fail "fuse 0-frame speech" "P01_empty.npy: vertex sequence has no frames" "$T/f.npy" "$BF" fuse --model "$T/m.safetensors" --data "$D" --speech "$T/P01_empty.npy" --expression "$E" --out "$T/f.npy"
# a model tensor relabelled I32
cp "$T/m.safetensors" "$T/m_i32.safetensors"
LC_ALL=C sed -i 's/"dtype":"F32"/"dtype":"I32"/' "$T/m_i32.safetensors"
expect_fail "fuse model tensor with dtype I32" "m_i32.safetensors: tensor '" "$T/f.npy" "$BF" fuse --model "$T/m_i32.safetensors" --data "$D" --speech "$S" --expression "$E" --out "$T/f.npy"
grep -qF "has dtype I32, expected floating-point values" "$T/out.txt" && ok || bad "I32 message"
# a finite but huge weight (3e38) in the speech encoder's last layer: the result overflows
cp "$T/m.safetensors" "$T/m_huge.safetensors"
n=$(od -An -tu8 -N8 "$T/m_huge.safetensors" | tr -d ' ')
begin=$(dd if="$T/m_huge.safetensors" bs=1 skip=8 count="$n" status=none | grep -o '"encoder_a.fc.weight":{[^}]*}' | sed 's/.*data_offsets":\[\([0-9]*\),.*/\1/')
for k in $(seq 0 15); do printf '\xe6\xb1\x61\x7f' | dd of="$T/m_huge.safetensors" bs=1 seek=$((8 + n + begin + 4 * k)) conv=notrunc status=none; done
expect_fail "fuse with a 3e38 model weight" "f.npy: not written: the result has a non-finite value" "$T/f.npy" "$BF" fuse --model "$T/m_huge.safetensors" --data "$D" --speech "$S" --expression "$E" --out "$T/f.npy"
expect_fail "fuse into /proc" "fuse: --out cannot be written: folder '/proc' is not writable" "" "${FU[@]}" --expression "$E" --out /proc/f.npy

# ---- eval-fusion ----
expect_err "eval-fusion --markdown = --model" "eval-fusion: --markdown is the same file as the input --model" "$BF" eval-fusion --data "$D" --model "$T/m.safetensors" --markdown "$T/m.safetensors"
cmp -s "$T/m.safetensors" "$T/m_copy.safetensors" && ok || bad "eval-fusion overwrote its --model"
cp -r "$D" "$T/nantruth"
off=$((10 + $(od -An -tu2 -j8 -N2 "$T/nantruth/truth/speech_bases.npy")))
printf '\x00\x00\xc0\x7f' | dd of="$T/nantruth/truth/speech_bases.npy" bs=1 seek=$off conv=notrunc status=none
expect_fail "eval-fusion NaN in truth/" "speech_bases.npy: non-finite value nan at flat index 0" "$T/md.md" "$BF" eval-fusion --data "$T/nantruth" --model "$T/m.safetensors" --markdown "$T/md.md"

# ---- speak (the shipped 1602-vertex audio model) ----
if [ -f "$W" ]; then
  SP=("$BF" speak --model "$W")
  expect_fail "speak --data with other vertex count (was an out-of-bounds read)" "dataset has 406 vertices, the audio model" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --data "$D" --template P01 --out "$T/s.npy"
  expect_fail "speak --data with other vertex count, --units m" "dataset has 406 vertices, the audio model" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --data "$D" --units m --template P01 --out "$T/s.npy"
  expect_fail "speak --units without --data" "speak: --units is the unit of the --data dataset; without --data there is none" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --units m --out "$T/s.npy"
  expect_fail "speak --units furlong" "--units: furlong not in {auto,mm,cm,m}" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --data "$D" --units furlong --out "$T/s.npy"
  # --naive (the naive-sum baseline): the same intensity and finite-output checks as --fusion
  expect_ok "gen-data grid 40 (the shipped model's 1602 vertices)" "$BF" gen-data --tiny --grid 40 --sentences 1 --out "$T/d40" --seed 3
  E40=$(ls "$T/d40/expression/"*.npy | head -1)
  for v in nan inf -1 11; do
    expect_fail "speak --naive --intensity $v" "speak: --intensity must be a finite number in [0, 10]" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --naive --expression "$E40" --intensity "$v" --out "$T/s.npy"
  done
  expect_fail "speak --naive --out = --expression" "speak: --out is the same file as the input --expression" "" "${SP[@]}" --wav "$T/x.wav" --naive --expression "$E40" --out "$E40"
  off=$((10 + $(od -An -tu2 -j8 -N2 "$E40")))
  huge="$T/$(basename "$E40" .npy)_huge.npy"  # every value 3e38: × intensity 10 overflows to inf
  { head -c "$off" "$E40"; yes $'\xe6\xb1\x61\x7f' | tr -d '\n' | head -c $(($(wc -c <"$E40") - off)); } >"$huge"
  expect_fail "speak --naive with a 3e38 expression" "s.npy: not written: the result has a non-finite value" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --naive --expression "$huge" --intensity 10 --out "$T/s.npy"
  grep -qF "(naive sum)" "$T/out.txt" && ok || bad "speak --naive non-finite message does not name the naive sum"
  expect_ok "speak --naive at intensity 10" "${SP[@]}" --wav "$T/x.wav" --naive --expression "$E40" --intensity 10 --out "$T/s.npy"
  rm -f "$T/s.npy"
  cp "$T/x.wav" "$T/x_copy.wav"
  expect_err "speak --out = --wav" "speak: --out is the same file as the input --wav" "${SP[@]}" --wav "$T/x.wav" --out "$T/x.wav"
  cmp -s "$T/x.wav" "$T/x_copy.wav" && ok || bad "speak overwrote its --wav"
  expect_fail "speak --out X --out-wav X" "speak: --out-wav is the same file as --out" "$T/s.npy" "${SP[@]}" --text "hello" --out "$T/s.npy" --out-wav "$T/s.npy"
  expect_fail "speak unwritable --out with --out-wav" "speak: --out cannot be written" "$T/s.wav" "${SP[@]}" --text "hello" --out /proc/s.npy --out-wav "$T/s.wav"
  for v in nan inf; do
    expect_fail "speak --intensity $v" "speak: --intensity must be a finite number in [0, 10]" "$T/s.npy" "${SP[@]}" --wav "$T/x.wav" --intensity $v --out "$T/s.npy"
  done
  expect_fail "speak --rate -100" "speak: --rate must be an integer in [80, 450], got -100" "$T/s.npy" "${SP[@]}" --text "hello" --rate -100 --out "$T/s.npy"
  head -c 60000 /dev/zero | tr '\0' 'a' >"$T/long.txt"
  expect_fail "speak --text of 60 kB" "speak: --text has 60000 characters; at most 50000" "$T/s.npy" "${SP[@]}" --text "$(cat "$T/long.txt")" --out "$T/s.npy"
  for r in 1 3; do
    head -c 200 /dev/zero | mkwav "$T/rate$r.wav" $r 16 1
    expect_fail "speak WAV at $r Hz (was a hang)" "rate$r.wav: implausible sample rate $r Hz" "$T/s.npy" "${SP[@]}" --wav "$T/rate$r.wav" --out "$T/s.npy"
  done
  head -c 200 /dev/zero | mkwav "$T/tiny.wav" 16000 16 1
  expect_fail "speak WAV shorter than one frame" "tiny.wav: audio too short: 100 samples" "$T/s.npy" "${SP[@]}" --wav "$T/tiny.wav" --out "$T/s.npy"
  { head -c 400 /dev/zero; printf '\x00\x00\xc0\x7f'; head -c 4000 /dev/zero; } | mkwav "$T/nan.wav" 16000 32 3
  expect_fail "speak WAV with a NaN sample" "nan.wav: non-finite sample at frame 100" "$T/s.npy" "${SP[@]}" --wav "$T/nan.wav" --out "$T/s.npy"
  head -c 7440000 /dev/zero | tr '\0' '\200' | mkwav "$T/31min.wav" 4000 8 1
  expect_fail "speak 31-minute WAV" "31min.wav: audio is 1860.0 s long; speak takes at most 1800.0 s" "$T/s.npy" "${SP[@]}" --wav "$T/31min.wav" --out "$T/s.npy"
  head -c 32000 /dev/zero | mkwav "$T/silence.wav" 16000 16 1
  expect_ok "speak on silence" "${SP[@]}" --wav "$T/silence.wav" --out "$T/silence.npy"
  yes $'\xff\x7f\x00\x80' | tr -d '\n' | head -c 32000 | mkwav "$T/clip.wav" 16000 16 1
  expect_ok "speak on clipped audio" "${SP[@]}" --wav "$T/clip.wav" --out "$T/clip.npy"
  [ -s "$T/silence.npy" ] && [ -s "$T/clip.npy" ] && ok || bad "speak on silence/clipping wrote nothing"
  # features: checks before the model is needed
  expect_err "features --out = --wav" "features: --out is the same file as the input --wav" "$BF" features --model "$W" --wav "$T/x.wav" --out "$T/x.wav"
  cmp -s "$T/x.wav" "$T/x_copy.wav" && ok || bad "features overwrote its --wav"
  expect_fail "features WAV at 1 Hz (was std::bad_alloc)" "rate1.wav: implausible sample rate 1 Hz" "$T/f.npy" "$BF" features --model "$W" --wav "$T/rate1.wav" --out "$T/f.npy"
  head -c 484000 /dev/zero | tr '\0' '\200' | mkwav "$T/121s.wav" 4000 8 1
  expect_fail "features 121 s WAV" "121s.wav: audio is 121.0 s long; features encodes the whole clip at once and takes at most 120.0 s" "$T/f.npy" "$BF" features --model "$W" --wav "$T/121s.wav" --out "$T/f.npy"
fi

# ---- train-audio / eval-audio: WAVs that do not belong to their sequence ----
AC="$T/acfg.json"
cat >"$AC" <<'J'
{"wav2vec2": {"conv_dim": [16, 16, 16, 16, 16, 16, 16], "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "num_conv_pos_embeddings": 8,
              "num_conv_pos_embedding_groups": 2},
 "faceformer": {"feature_dim": 16, "num_heads": 2, "dim_feedforward": 16}}
J
cp -r "$D" "$T/long60"
for f in "$T/long60/speech/"*.npy; do tone 1920000 | mkwav "${f%.npy}.wav" 16000 16 1; done  # 60 s each
expect_fail "train-audio 60 s WAV for a short sequence" "audio is 60 s long but its sequence" "$T/a.safetensors" "$BF" train-audio --data "$T/long60" --out "$T/a.safetensors" --config "$AC" --epochs 1 --quiet
cp -r "$D" "$T/short10"
for f in "$T/short10/speech/"*.npy; do tone 320 | mkwav "${f%.npy}.wav" 16000 16 1; done  # 10 ms each
expect_fail "train-audio 10 ms WAV" "audio too short: 160 samples" "$T/a.safetensors" "$BF" train-audio --data "$T/short10" --out "$T/a.safetensors" --config "$AC" --epochs 1 --quiet
grep -qF "short10/speech/" "$T/out.txt" && ok || bad "10 ms WAV message does not name the file"
expect_fail "train-audio --lr inf" "train-audio: --lr must be a finite number" "$T/a.safetensors" "$BF" train-audio --data "$T/long60" --out "$T/a.safetensors" --lr inf --quiet
expect_fail "train-audio --velocity-weight nan" "train-audio: --velocity-weight must be a finite number" "$T/a.safetensors" "$BF" train-audio --data "$T/long60" --out "$T/a.safetensors" --velocity-weight nan --quiet
expect_fail "train-audio --out = --config" "train-audio: --out is the same file as the input --config" "" "$BF" train-audio --data "$T/long60" --out "$AC" --config "$AC" --quiet
if [ -f "$W" ]; then
  expect_fail "eval-audio vertex count" "vertices, the dataset 406" "" "$BF" eval-audio --model "$W" --data "$T/short10"
  for f in "$T/d40/speech/"*.npy; do tone 320 | mkwav "${f%.npy}.wav" 16000 16 1; done  # 10 ms each
  expect_fail "eval-audio 10 ms WAV in the dataset" "d40/speech/" "" "$BF" eval-audio --model "$W" --data "$T/d40"
  grep -qF ".wav: audio too short: 160 samples" "$T/out.txt" && ok || bad "eval-audio 10 ms WAV message"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
