#!/usr/bin/python3
"""Convert a FaceFormer checkpoint (EvelynFan/FaceFormer, e.g. vocaset.pth) to a blendfuse audio model.

The output is one safetensors file that ``blendfuse::nn::AudioModel::load`` reads and
``blendfuse speak --model OUT`` runs (include/blendfuse/nn/audio_model.hpp): the wav2vec 2.0
encoder as ``audio_encoder.<Hugging Face name>``, the decoder under FaceFormer's own names,
``templates.<subject>`` (V, 3) neutral faces, and the metadata ``config`` (model_type
"blendfuse_audio", the wav2vec2 and faceformer configs, the training subjects in style-code order,
fps), ``wav2vec2_config`` and ``faceformer_config``.

    /usr/bin/python3 scripts/convert_faceformer.py vocaset/vocaset.pth \\
        --templates vocaset/templates.pkl -o faceformer_vocaset.safetensors

Input: FaceFormer's ``model.state_dict()`` saved with torch.save (``audio_encoder.*`` = Hugging Face
``Wav2Vec2Model`` names; ``audio_feature_map``, ``vertice_map``, ``vertice_map_r``, ``obj_vector``,
``transformer_decoder.layers.0.*``; the buffer ``PPE.pe``), or the same tensors in a .safetensors.
Sizes come from the tensors: V from ``vertice_map.weight`` (d, 3V) (checked against
``vertice_map_r`` and the templates), d, the feed-forward size, the number of training subjects
(``obj_vector.weight``), the audio width, the PPE period (from ``PPE.pe``, which is checked against
the encoding blendfuse computes, then dropped) and the wav2vec2 sizes. Not in the tensors, so
options: ``--fps`` (30, VOCASET), ``--num-heads`` (4, hard-coded in FaceFormer), ``--subjects``
(FaceFormer's VOCASET training-subject order, see DEFAULT_SUBJECTS; it must match the one-hot order
used in training), and the wav2vec2 strides/heads: wav2vec2-base-960h's unless
``--wav2vec2-config config.json`` is given (which then must match the tensors exactly).

Templates (``--templates``, repeatable): FaceFormer's ``templates.pkl`` (read with
scripts/convert_vocaset_templates.py's restricted unpickler), a folder of ``<subject>.npy`` /
``<subject>.obj`` files, a single ``.npy`` / ``.obj`` file (subject = file name stem), or
``SUBJECT=FILE``. Without templates ``speak`` needs ``--data DIR``.

``--scale S`` changes the length unit of the model (VOCASET is in metres; ``--scale 1000`` gives
millimetres like blendfuse's datasets): vertice_map_r is multiplied by S, vertice_map's weight
divided by S, templates multiplied by S; the output of ``speak`` is then S times FaceFormer's.

Only FaceFormer's VOCASET alignment (one audio frame per output frame, 30 fps) is implemented; BIWI
models (two audio frames per motion frame) convert but would not run as trained. On any error the
script prints ``<file>: what is wrong`` to stderr and exits with status 1.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_wav2vec2 as w2v  # noqa: E402
from convert_wav2vec2 import ConvertError  # noqa: E402

# FaceFormer's VOCASET --train_subjects default (main.py / demo.py), i.e. the one-hot order.
DEFAULT_SUBJECTS = ("FaceTalk_170728_03272_TA FaceTalk_170904_00128_TA FaceTalk_170725_00137_TA "
                    "FaceTalk_170915_00223_TA FaceTalk_170811_03274_TA FaceTalk_170913_03279_TA "
                    "FaceTalk_170904_03276_TA FaceTalk_170912_03278_TA").split()

ENCODER_PREFIX = "audio_encoder."
_L = "transformer_decoder.layers.0."
PPE_MAX_SEQ_LEN = 600  # FaceFormer's PeriodicPositionalEncoding(max_seq_len=600)


def decoder_shapes(V, d, F, n_subjects, audio_dim):
    s = {
        "audio_feature_map.weight": (d, audio_dim), "audio_feature_map.bias": (d,),
        "vertice_map.weight": (d, 3 * V), "vertice_map.bias": (d,),
        "vertice_map_r.weight": (3 * V, d), "vertice_map_r.bias": (3 * V,),
        "obj_vector.weight": (d, n_subjects),
    }
    for a in ("self_attn", "multihead_attn"):
        s[_L + a + ".in_proj_weight"] = (3 * d, d)
        s[_L + a + ".in_proj_bias"] = (3 * d,)
        s[_L + a + ".out_proj.weight"] = (d, d)
        s[_L + a + ".out_proj.bias"] = (d,)
    s[_L + "linear1.weight"] = (F, d)
    s[_L + "linear1.bias"] = (F,)
    s[_L + "linear2.weight"] = (d, F)
    s[_L + "linear2.bias"] = (d,)
    for k in (1, 2, 3):
        s[_L + "norm%d.weight" % k] = (d,)
        s[_L + "norm%d.bias" % k] = (d,)
    return s


def ppe_table(d, period):
    """FaceFormer's PeriodicPositionalEncoding rows 0..period-1 (period, d), float64."""
    pe = np.zeros((period, d))
    pos = np.arange(period, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


def infer_period(pe, where, atol=1e-4):
    """The period of FaceFormer's PPE buffer (1, N, d): the smallest p whose encoding, repeated,
    equals the buffer to `atol`."""
    pe = np.asarray(pe, dtype=np.float64)
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[1] < 1:
        raise ConvertError("%s: tensor 'PPE.pe' has shape %s, expected (1, N, feature_dim)"
                           % (where, w2v._shape_str(pe.shape)))
    N, d = pe.shape[1], pe.shape[2]
    for p in range(1, N + 1):
        table = ppe_table(d, p)
        if np.allclose(pe[0], table[np.arange(N) % p], rtol=0, atol=atol):
            return p
    raise ConvertError("%s: tensor 'PPE.pe' is not FaceFormer's periodic positional encoding" % where)


def read_vertices(path):
    """(V, 3) float64 from a .npy ((V, 3) or (3V,)) or the 'v' lines of a .obj."""
    if path.endswith(".obj"):
        vs = []
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("v "):
                        parts = line.split()
                        try:
                            vs.append([float(x) for x in parts[1:4]])
                        except ValueError:
                            raise ConvertError("%s: bad vertex line: %s" % (path, line.strip()))
                        if len(vs[-1]) != 3:
                            raise ConvertError("%s: bad vertex line: %s" % (path, line.strip()))
        except OSError as e:
            raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
        if not vs:
            raise ConvertError("%s: no vertices ('v x y z' lines)" % path)
        a = np.array(vs, dtype=np.float64)
    else:
        try:
            a = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        except (OSError, ValueError) as e:
            raise ConvertError("%s: cannot read as .npy: %s" % (path, e))
    if a.ndim == 1 and a.size % 3 == 0:
        a = a.reshape(-1, 3)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        raise ConvertError("%s: expected vertices of shape (V, 3), got %s" % (path, w2v._shape_str(a.shape)))
    if not np.all(np.isfinite(a)):
        raise ConvertError("%s: non-finite vertex coordinates" % path)
    return a


def load_templates(specs, trust_pickle=False):
    """{subject: ((V, 3) array, source path)} from the --templates arguments."""
    out = {}

    def add(subject, a, src):
        out[subject] = (a, src)

    for spec in specs:
        subject = None
        path = spec
        if "=" in spec and not os.path.exists(spec):
            subject, path = spec.split("=", 1)
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if f.endswith((".npy", ".obj")))
            if not files:
                raise ConvertError("%s: no .npy or .obj template files in this folder" % path)
            for f in files:
                add(os.path.splitext(f)[0], read_vertices(os.path.join(path, f)), os.path.join(path, f))
        elif path.endswith(".pkl"):
            import convert_vocaset_templates as cvt  # noqa: PLC0415
            try:
                t = cvt.load_templates(path, trust=trust_pickle)
            except cvt.ConvertError as e:
                raise ConvertError(str(e))
            for s, a in t.items():
                add(s, a.astype(np.float64), path)
        elif path.endswith((".npy", ".obj")):
            if not os.path.isfile(path):
                raise ConvertError("%s: no such file" % path)
            add(subject or os.path.splitext(os.path.basename(path))[0], read_vertices(path), path)
        else:
            raise ConvertError("%s: templates must be a .pkl, a folder, or a .npy / .obj file" % path)
    return out


def read_checkpoint(path, trust=False):
    tensors, dtypes = w2v.read_weights(path, trust)
    if tensors and all(n.startswith("module.") for n in tensors):  # saved from nn.DataParallel
        tensors = {n[7:]: a for n, a in tensors.items()}
        dtypes = {n[7:]: a for n, a in dtypes.items()}
    return tensors, dtypes


def convert(src, out, templates=(), subjects=None, wav2vec2_config=None, fps=30.0, period=None,
            num_heads=4, scale=1.0, trust=False, log=print, warn=None):
    if warn is None:
        def warn(msg):
            print("warning: " + msg, file=sys.stderr)
    if not os.path.isfile(src):
        raise ConvertError("%s: no such file" % src)
    if not (fps > 0 and math.isfinite(fps)):
        raise ConvertError("--fps must be positive, got %s" % fps)
    if not (scale > 0 and math.isfinite(scale)):
        raise ConvertError("--scale must be positive, got %s" % scale)
    tensors, dtypes = read_checkpoint(src, trust)

    # ---- audio encoder
    if not any(n.startswith(ENCODER_PREFIX) for n in tensors):
        raise ConvertError("%s: no '%s*' tensors: not a FaceFormer state dict" % (src, ENCODER_PREFIX))
    scheme, _, enc, dropped, outside = w2v.extract_encoder(tensors, src, ENCODER_PREFIX)
    if wav2vec2_config is not None:
        cfg_where = wav2vec2_config
        wcfg = w2v.arch_config(w2v.read_json(wav2vec2_config), wav2vec2_config)
    else:
        cfg_where = "the sizes inferred from the tensors (wav2vec2-base-960h strides and heads)"
        try:
            wcfg = w2v.infer_config(enc)
        except ConvertError as e:
            raise ConvertError("%s: %s (--wav2vec2-config)" % (src, e))
    enc = w2v.check_encoder(enc, wcfg, src, config_where=cfg_where)

    # ---- decoder
    dec_names = set(outside)
    for n in ("vertice_map.weight", "audio_feature_map.weight", "obj_vector.weight", _L + "linear1.weight"):
        if n not in tensors:
            raise ConvertError("%s: missing tensor '%s' (not a FaceFormer state dict?)" % (src, n))
        if tensors[n].ndim != 2:
            raise ConvertError("%s: tensor '%s' has shape %s, expected a matrix"
                               % (src, n, w2v._shape_str(tensors[n].shape)))
    d, V3 = tensors["vertice_map.weight"].shape
    if V3 % 3:
        raise ConvertError("%s: tensor 'vertice_map.weight' has shape %s: its input size %d is not 3 * V"
                           % (src, w2v._shape_str((d, V3)), V3))
    V = V3 // 3
    n_subjects = int(tensors["obj_vector.weight"].shape[1])
    F = int(tensors[_L + "linear1.weight"].shape[0])
    audio_dim = int(tensors["audio_feature_map.weight"].shape[1])
    if audio_dim != wcfg["hidden_size"]:
        raise ConvertError("%s: audio_feature_map.weight takes %d features but the wav2vec2 encoder's hidden size "
                           "is %d" % (src, audio_dim, wcfg["hidden_size"]))
    if d % 2 or d % num_heads:
        raise ConvertError("%s: feature_dim %d must be even and divisible by --num-heads %d" % (src, d, num_heads))
    shapes = decoder_shapes(V, d, F, n_subjects, audio_dim)
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise ConvertError("%s: missing tensor%s %s" % (src, "s" if len(missing) > 1 else "",
                                                       ", ".join("'%s'" % m for m in missing)))
    dec = {}
    for n, shape in shapes.items():
        a = tensors[n]
        if tuple(a.shape) != tuple(shape):
            raise ConvertError("%s: tensor '%s' has shape %s, expected %s (V = %d from vertice_map.weight, "
                               "feature_dim %d, %d subjects)" % (src, n, w2v._shape_str(a.shape),
                                                                 w2v._shape_str(shape), V, d, n_subjects))
        a = np.asarray(a, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ConvertError("%s: tensor '%s' contains NaN or Inf" % (src, n))
        dec[n] = a
    if "PPE.pe" in tensors:
        low = dtypes.get("PPE.pe") in ("float16", "bfloat16", "F16", "BF16")
        p = infer_period(tensors["PPE.pe"], src, atol=1e-2 if low else 1e-4)
        if tensors["PPE.pe"].shape[2] != d:
            raise ConvertError("%s: PPE.pe has width %d, feature_dim is %d" % (src, tensors["PPE.pe"].shape[2], d))
        if period is not None and period != p:
            raise ConvertError("%s: --period %d contradicts the PPE.pe buffer (period %d)" % (src, period, p))
        period = p
        dropped.append(("PPE.pe", "positional-encoding buffer, recomputed (period %d)" % p))
    elif period is None:
        period = 30
        warn("%s: no PPE.pe buffer; using period %d (--period)" % (src, period))
    extra = sorted(n for n in dec_names if n not in shapes and n != "PPE.pe")
    if extra:
        raise ConvertError("%s: unexpected tensor%s %s (FaceFormer has one decoder layer without a final norm)"
                           % (src, "s" if len(extra) > 1 else "", ", ".join("'%s'" % m for m in extra[:8])))

    # ---- subjects
    if subjects is None:
        if n_subjects != len(DEFAULT_SUBJECTS):
            raise ConvertError("%s: obj_vector.weight has %d training subjects, FaceFormer's VOCASET default list "
                               "has %d: pass --subjects in training order" % (src, n_subjects, len(DEFAULT_SUBJECTS)))
        subjects = list(DEFAULT_SUBJECTS)
    subjects = list(subjects)
    if len(subjects) != n_subjects:
        raise ConvertError("%s: obj_vector.weight has %d training subjects, --subjects names %d"
                           % (src, n_subjects, len(subjects)))
    if len(set(subjects)) != len(subjects):
        raise ConvertError("--subjects lists a subject twice")

    # ---- templates
    tmpl = load_templates(templates, trust_pickle=trust)
    for s, (a, where) in tmpl.items():
        if a.shape[0] != V:
            raise ConvertError("%s: template of %s has %d vertices, the model %d (vertice_map.weight)"
                               % (where, s, a.shape[0], V))
    if not tmpl:
        warn("no --templates: speak will need --data DIR for the neutral faces")
    else:
        lacking = [s for s in subjects if s not in tmpl]
        if lacking:
            warn("no template for training subject%s %s" % ("s" if len(lacking) > 1 else "", ", ".join(lacking)))

    # ---- units
    if scale != 1.0:
        dec["vertice_map_r.weight"] = dec["vertice_map_r.weight"] * scale
        dec["vertice_map_r.bias"] = dec["vertice_map_r.bias"] * scale
        dec["vertice_map.weight"] = dec["vertice_map.weight"] / scale

    wjson = dict(wcfg)
    fjson = {"model_type": "faceformer", "vertices": V, "feature_dim": int(d), "num_heads": int(num_heads),
             "dim_feedforward": F, "period": int(period), "n_subjects": n_subjects, "audio_dim": audio_dim,
             "layer_norm_eps": 1e-5}
    config = {"model_type": "blendfuse_audio", "wav2vec2": wjson, "faceformer": fjson, "subjects": subjects,
              "fps": float(fps)}
    out_tensors = {ENCODER_PREFIX + n: a for n, a in enc.items()}
    out_tensors.update(dec)
    for s, (a, _) in tmpl.items():
        out_tensors["templates." + s] = a * scale
    w2v.write_safetensors(out, out_tensors, {
        "config": json.dumps(config), "wav2vec2_config": json.dumps(wjson), "faceformer_config": json.dumps(fjson),
        "converted_from": os.path.basename(src)})

    log("%s: FaceFormer, V = %d, feature_dim %d, %d heads, period %d, %d subjects, %.6g fps; wav2vec2 %d layers, "
        "hidden %d (%s)" % (src, V, d, num_heads, period, n_subjects, fps, wcfg["num_hidden_layers"],
                            wcfg["hidden_size"], w2v.describe_dtypes(dtypes, list(tensors))))
    if tmpl:
        log("templates: %s" % ", ".join(sorted(tmpl)))
    if scale != 1.0:
        log("scaled lengths by %g" % scale)
    w2v.log_dropped_and_written(log, dropped, out)
    return config


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("checkpoint", help="FaceFormer state dict (.pth / .pt / .bin, or .safetensors)")
    p.add_argument("-o", "--out", required=True, help="output .safetensors")
    p.add_argument("--templates", action="append", default=[],
                   help="templates.pkl, a folder of <subject>.npy/.obj, FILE.npy/.obj or SUBJECT=FILE (repeatable)")
    p.add_argument("--subjects", default=None,
                   help="training subjects in one-hot order, space- or comma-separated (default: FaceFormer's "
                        "VOCASET list)")
    p.add_argument("--wav2vec2-config", default=None,
                   help="Hugging Face config.json of the audio encoder (default: wav2vec2-base-960h's, sizes "
                        "inferred from the tensors)")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (30 for VOCASET)")
    p.add_argument("--period", type=int, default=None, help="PPE period (default: from PPE.pe, else 30)")
    p.add_argument("--num-heads", type=int, default=4, help="decoder attention heads (FaceFormer: 4)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="length unit factor, e.g. 1000 for metres -> millimetres (default 1)")
    p.add_argument("--trust", action="store_true",
                   help="load pickles (checkpoint and templates.pkl) without restrictions (runs code from the file)")
    args = p.parse_args(argv)
    subjects = None if args.subjects is None else [s for s in args.subjects.replace(",", " ").split() if s]
    try:
        if args.num_heads <= 0:
            raise ConvertError("--num-heads must be positive")
        convert(args.checkpoint, args.out, args.templates, subjects, args.wav2vec2_config, args.fps, args.period,
                args.num_heads, args.scale, args.trust)
    except ConvertError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
