#!/usr/bin/env bash
# End-to-end test of `blendfuse render` on a tiny procedural dataset: a PNG contact sheet, an MP4
# with audio (when ffmpeg is installed), and bad inputs (clear errors naming the file, no output).
# usage: test_cli_render.sh path/to/blendfuse
. "$(dirname "$0")/lib.sh"

frames_of() { head -c 128 "$1" | tr -d '\0' | grep -ao "shape': ([0-9]*" | grep -o '[0-9]*$'; }
# png_size FILE: "WxH" from the IHDR chunk
png_size() { local h; h=$(od -An -tu1 -j16 -N8 "$1" | tr -s ' '); set -- $h; echo "$(( ($1<<24)|($2<<16)|($3<<8)|$4 ))x$(( ($5<<24)|($6<<16)|($7<<8)|$8 ))"; }
no_outputs() { if ls "$T"/out* "$T"/*.tmp* >/dev/null 2>&1; then bad "$1: an output or temporary file was left behind: $(ls "$T"/out* "$T"/*.tmp* 2>/dev/null)"; else ok; fi; }

D=$T/d
expect_ok "gen-data" "$BF" gen-data --tiny --grid 16 --sentences 1 --out "$D" --seed 2
S=$D/speech/P01_sentence01.npy; E=$D/expression/P01_smile01.npy
TS=$(frames_of "$S"); TE=$(frames_of "$E")
[ -n "$TS" ] && [ -n "$TE" ] && ok || bad "cannot read the frame counts of $S / $E"

# ---- contact sheet: rows = frames, columns = inputs ----
expect_ok "png contact sheet" "$BF" render --data "$D" --in "$S" --in "$E" --caption speech --caption "smile :)" --pad \
  --size 128 --frames 4 --out "$T/sheet.png"
[ "$(png_size "$T/sheet.png")" = "256x512" ] && ok || bad "contact sheet is $(png_size "$T/sheet.png"), expected 256x512"
expect_ok "png, offsets on a subject template" "$BF" render --data "$D" --in "$D/truth/speech_bases.npy" --offsets --subject P02 \
  --size 96 --frames 2 --out "$T/bases.png" --quiet
[ -s "$T/bases.png" ] && ok || bad "offsets render missing"
expect_ok "one frame, one-sided, no antialiasing" "$BF" render --data "$D" --in "$S" --frames 1 --antialias 1 --cull --out "$T/one.png"
[ "$(png_size "$T/one.png")" = "256x256" ] && ok || bad "default contact-sheet panel is not 256 px"

# ---- video with audio ----
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i "sine=frequency=220:duration=2" -ar 16000 -ac 1 "$T/a.wav" && ok || bad "ffmpeg cannot make a test WAV"
  expect_ok "mp4 with audio" "$BF" render --data "$D" --in "$S" --in "$E" --pad --size 96 --wav "$T/a.wav" --out "$T/video.mp4"
  streams=$(ffprobe -v error -show_entries stream=codec_type,codec_name,nb_frames -of csv=p=0 "$T/video.mp4" | sort | tr '\n' ' ')
  TMAX=$(( TS > TE ? TS : TE ))
  [ "$streams" = "aac,audio,$(ffprobe -v error -select_streams a -show_entries stream=nb_frames -of csv=p=0 "$T/video.mp4") h264,video,$TMAX " ] && ok \
    || bad "mp4 streams: '$streams' (expected one aac audio and one h264 video stream of $TMAX frames)"
  dims=$(ffprobe -v error -select_streams v -show_entries stream=width,height,pix_fmt -of csv=p=0 "$T/video.mp4")
  [ "$dims" = "192,96,yuv420p" ] && ok || bad "mp4 video is '$dims', expected 192,96,yuv420p"
  expect_ok "mp4 odd size is padded to even" "$BF" render --data "$D" --in "$S" --size 75 --fps 25 --antialias 1 --out "$T/odd.mp4"
  [ "$(ffprobe -v error -select_streams v -show_entries stream=width,height -of csv=p=0 "$T/odd.mp4")" = "76,76" ] && ok || bad "odd size not padded"
  expect_err "ffmpeg missing" "apt-get install ffmpeg" env PATH=/nonexistent "$BF" render --data "$D" --in "$S" --out "$T/out.mp4"
  printf 'not a wav' >"$T/bad.wav"
  expect_err "unreadable wav" "bad.wav" "$BF" render --data "$D" --in "$S" --wav "$T/bad.wav" --out "$T/out.mp4"
  expect_err "missing wav" "nope.wav: file not found" "$BF" render --data "$D" --in "$S" --wav "$T/nope.wav" --out "$T/out.mp4"
  expect_err "output = wav" "would overwrite an input" "$BF" render --data "$D" --in "$S" --wav "$T/a.mp4" --out "$T/a.mp4"
  no_outputs "video errors"
else
  echo "note: ffmpeg/ffprobe not installed; MP4 checks skipped"
fi

# ---- bad inputs: exit 1, the message names the file, nothing written ----
expect_err "missing input" "missing.npy: file not found" "$BF" render --data "$D" --in "$T/missing.npy" --out "$T/out.png"
head -c 100 "$S" >"$T/trunc.npy"
expect_err "truncated npy" "trunc.npy" "$BF" render --data "$D" --in "$T/trunc.npy" --out "$T/out.png"
expect_ok "gen other topology" "$BF" gen-data --tiny --grid 20 --sentences 1 --out "$T/d2" --seed 2
expect_err "vertex count mismatch" "template.obj has" "$BF" render --data "$D" --in "$T/d2/speech/P01_sentence01.npy" --out "$T/out.png"
grep -q "P01_sentence01.npy" "$T/out.txt" && ok || bad "vertex-count error does not name the file"
expect_err "lengths differ" "pass --pad" "$BF" render --data "$D" --in "$S" --in "$D/truth/speech_bases.npy" --out "$T/out.png"
grep -q "speech_bases.npy: has 6 frames but" "$T/out.txt" && ok || bad "length error does not name the shorter file"
expect_err "unknown subject" "unknown subject 'NOPE'" "$BF" render --data "$D" --in "$S" --offsets --subject NOPE --out "$T/out.png"
expect_err "missing dataset" "nodata: dataset folder not found" "$BF" render --data "$T/nodata" --in "$S" --out "$T/out.png"
expect_err "bad extension" "unsupported extension '.gif'" "$BF" render --data "$D" --in "$S" --out "$T/out.gif"
cp "$S" "$T/seq.png"
expect_err "output = input" "would overwrite an input" "$BF" render --data "$D" --in "$T/seq.png" --out "$T/seq.png"
cmp -s "$S" "$T/seq.png" && ok || bad "the input named as output was modified"
ln -s "$D/template.obj" "$T/tmpl.png"
expect_err "output = template (through a link)" "would overwrite an input ($D/template.obj)" "$BF" render --data "$D" --in "$S" --out "$T/tmpl.png"
ln -s "$S" "$T/link.mp4"
expect_err "output = input through a link" "would overwrite an input" "$BF" render --data "$D" --in "$S" --out "$T/link.mp4"
expect_err "absurd size" "--size 10 out of range" "$BF" render --data "$D" --in "$S" --size 10 --out "$T/out.png"
expect_err "absurd fps" "--fps 0 out of range" "$BF" render --data "$D" --in "$S" --fps 0 --out "$T/out.png"
expect_err "absurd frames" "--frames 1000 out of range" "$BF" render --data "$D" --in "$S" --frames 1000 --out "$T/out.png"
expect_err "too many captions" "one caption per input" "$BF" render --data "$D" --in "$S" --caption a --caption b --out "$T/out.png"
expect_err "wav with png" "needs an .mp4 output" "$BF" render --data "$D" --in "$S" --wav "$S" --out "$T/out.png"
expect_err "missing output folder" "does not exist" "$BF" render --data "$D" --in "$S" --out "$T/no/out.png"
if command -v python3 >/dev/null; then
  # (T, V, 3) copies of the speech sequence: one with a NaN in frame 2, one of rank 4
  python3 - "$S" "$T" <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
hl = struct.unpack('<H', b[8:10])[0]
hdr, data = b[10:10 + hl].decode('latin1'), bytearray(b[10 + hl:])
shape = tuple(int(x) for x in hdr.split("'shape': (")[1].split(')')[0].split(',') if x.strip())
V = shape[1]
data[(2 * V * 3 + 5) * 4:(2 * V * 3 + 6) * 4] = struct.pack('<f', float('nan'))
open(out + '/nan.npy', 'wb').write(b[:10 + hl] + bytes(data))
def npy(path, shape, payload):
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (shape,)
    h += ' ' * (63 - (10 + len(h)) % 64) + '\n'
    open(path, 'wb').write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(h)) + h.encode() + payload)
npy(out + '/rank4.npy', (1, shape[0], V, 3), bytes(b[10 + hl:]))
PY
  expect_err "NaN in a frame" "at frame 2" "$BF" render --data "$D" --in "$T/nan.npy" --out "$T/out.png"
  grep -q "nan.npy" "$T/out.txt" && ok || bad "NaN error does not name the file"
  expect_err "wrong rank" "rank4.npy" "$BF" render --data "$D" --in "$T/rank4.npy" --out "$T/out.png"
fi
no_outputs "errors"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
