#!/usr/bin/python3
"""Convert a Hugging Face (or torchaudio) wav2vec 2.0 checkpoint to one blendfuse safetensors file.

The output is what ``blendfuse::nn::Wav2Vec2Model`` (include/blendfuse/nn/wav2vec2.hpp) loads as is
and what ``blendfuse features --model OUT`` runs: every encoder tensor as float32 under
``wav2vec2.<Hugging Face name>``, and the architecture as JSON in the metadata key
``wav2vec2_config`` (the config.json keys the C++ ``Wav2Vec2Config`` reads).

    /usr/bin/python3 scripts/convert_wav2vec2.py wav2vec2-base-960h/ -o w2v.safetensors
    /usr/bin/python3 scripts/convert_wav2vec2.py model.safetensors --config config.json -o w2v.safetensors

Input: a folder with ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin`` (sharded
``*.index.json`` checkpoints too), or one weights file (``.safetensors``, or a ``torch.save``'d
state dict ``.bin`` / ``.pt`` / ``.pth``) with ``config.json`` next to it or given by ``--config``.
``preprocessor_config.json`` next to the config (if present) supplies ``do_normalize``.

Accepted names: Hugging Face ``Wav2Vec2Model`` (no prefix), ``Wav2Vec2ForCTC`` /
``Wav2Vec2ForPreTraining`` / ... (prefix ``wav2vec2.``), any other prefix (``--prefix``, e.g.
FaceFormer's ``audio_encoder.``), and torchaudio's ``wav2vec2_model()`` names
(``encoder.feature_projection.*``, ``encoder.transformer.*``). The positional convolution's weight
norm may be spelled ``weight_g`` / ``weight_v``, ``parametrizations.weight.original0`` /
``original1``, or be folded into a plain ``weight`` (then g = per-tap norm, v = weight).
Heads and training-only tensors (``lm_head.*``, ``masked_spec_embed``, ``quantizer.*``,
``project_q.*``, ``project_hid.*``, torchaudio's ``aux.*``, ...) are dropped and listed.
float16 / bfloat16 / float64 tensors are converted to float32.

Only the architecture the C++ module implements is accepted (``feat_extract_norm`` "group",
``do_stable_layer_norm`` false, ``conv_bias`` false, GELU activations); others are rejected with
the config file named. Missing, unexpected or misshaped encoder tensors and non-finite values are
errors naming the file and the tensor. On any error the script prints ``<file>: what is wrong`` to
stderr and exits with status 1; the output is written atomically (temp file + rename).

Needs numpy; torch only to read ``.bin`` / ``.pt`` / ``.pth`` files (loaded with
``weights_only=True`` unless ``--trust`` is given: full unpickling runs code from the file).
"""

import argparse
import json
import os
import pickle
import struct
import sys
import tempfile
import zipfile

import numpy as np


class ConvertError(Exception):
    """A problem with an input or output file; str() is '<file>: what is wrong'."""


# facebook/wav2vec2-base-960h's architecture (also transformers' Wav2Vec2Config defaults).
BASE_CONFIG = {
    "model_type": "wav2vec2",
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "layer_norm_eps": 1e-5,
    "do_stable_layer_norm": False,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "do_normalize": True,
}

# Encoder-relative names that are not part of inference (dropped, listed).
_DROP_REL = {"masked_spec_embed": "SpecAugment mask embedding (training only)"}
# Names outside the encoder prefix, by first component, with the reason printed.
_DROP_HEADS = {
    "lm_head": "CTC head",
    "quantizer": "pre-training quantizer",
    "project_q": "pre-training projection",
    "project_hid": "pre-training projection",
    "dropout_features": "pre-training",
    "aux": "torchaudio CTC head",
    "projector": "classification head",
    "classifier": "classification head",
    "layer_weights": "classification head",
}

_PROBE = "feature_projection.projection.weight"


# ---- safetensors ---------------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
              "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
              "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


def read_safetensors(path):
    """Returns ({name: numpy array (BF16 as float32)}, {name: dtype string}, metadata dict)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    if len(data) < 8:
        raise ConvertError("%s: truncated safetensors file (%d bytes)" % (path, len(data)))
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ConvertError("%s: truncated or corrupt safetensors file: header length %d exceeds the %d bytes "
                           "after it" % (path, n, len(data) - 8))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: corrupt safetensors header: %s" % (path, e))
    if not isinstance(header, dict):
        raise ConvertError("%s: corrupt safetensors header: not a JSON object" % path)
    base = 8 + n
    size = len(data) - base
    meta = header.pop("__metadata__", None) or {}
    tensors, dtypes = {}, {}
    for name, info in header.items():
        try:
            dt, shape, (b, e) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ConvertError("%s: corrupt safetensors header entry for tensor '%s'" % (path, name))
        if not (0 <= b <= e <= size):
            raise ConvertError("%s: tensor '%s': data_offsets [%d, %d) run past the %d-byte data buffer "
                               "(truncated file?)" % (path, name, b, e, size))
        count = int(np.prod(shape)) if shape else 1
        if dt == "BF16":
            if e - b != 2 * count:
                raise ConvertError("%s: tensor '%s': byte size does not match shape %s of BF16" % (path, name, shape))
            u = np.frombuffer(data, dtype="<u2", count=count, offset=base + b).astype(np.uint32) << 16
            arr = u.view(np.float32).reshape(shape)
        elif dt in _ST_DTYPES:
            npdt = _ST_DTYPES[dt]
            if e - b != npdt.itemsize * count:
                raise ConvertError("%s: tensor '%s': byte size %d does not match shape %s of %s"
                                   % (path, name, e - b, shape, dt))
            arr = np.frombuffer(data, dtype=npdt, count=count, offset=base + b).reshape(shape)
        else:
            raise ConvertError("%s: tensor '%s': unsupported dtype %s" % (path, name, dt))
        tensors[name] = arr
        dtypes[name] = dt
    return tensors, dtypes, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: float32 array} (sorted names, 8-byte aligned header) atomically."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in sorted(metadata.items())}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ConvertError("%s: cannot write: %s" % (path, e.strerror or e))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConvertError("%s: cannot write: %s" % (path, e.strerror or e))


# ---- PyTorch checkpoints -------------------------------------------------------------------------

def _torch_to_numpy(t):
    import torch  # noqa: PLC0415 - only needed for pickled checkpoints
    t = t.detach().cpu()
    name = str(t.dtype).replace("torch.", "")
    if t.is_floating_point() and t.dtype != torch.float64:
        return t.float().numpy(), name
    return t.numpy(), name


def read_torch_checkpoint(path, trust=False):
    """Returns ({name: numpy array}, {name: dtype string}) of a torch.save'd state dict."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ConvertError("%s: reading PyTorch checkpoints needs torch (use /usr/bin/python3 with Debian's "
                           "python3-torch, or convert the file to safetensors)" % path)
    if not os.path.isfile(path):
        raise ConvertError("%s: no such file" % path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    if magic.startswith(b"PK") and not zipfile.is_zipfile(path):  # torch.save's zip format
        raise ConvertError("%s: truncated or corrupt PyTorch checkpoint (incomplete zip archive)" % path)
    try:
        if trust:
            obj = torch.load(path, map_location="cpu")
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except TypeError:  # torch < 1.13 has no weights_only
                obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure to unpickle is a bad input file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        restricted = not trust and isinstance(e, pickle.UnpicklingError)
        raise ConvertError("%s: not a readable PyTorch checkpoint (%s: %s)%s"
                           % (path, type(e).__name__, msg, "; it holds more than tensors: if you trust the file, "
                              "pass --trust" if restricted else ""))
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict) and not any(torch.is_tensor(v) for v in obj.values()):
                obj = obj[key]
                break
    elif hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise ConvertError("%s: expected a state dict (name -> tensor), got %s" % (path, type(obj).__name__))
    tensors, dtypes = {}, {}
    for k, v in obj.items():
        if torch.is_tensor(v):
            tensors[str(k)], dtypes[str(k)] = _torch_to_numpy(v)
    return tensors, dtypes


def read_weights(path, trust=False):
    """Reads a .safetensors, a pickled state dict, or a sharded *.index.json checkpoint."""
    if path.endswith(".index.json"):
        try:
            with open(path, "r", encoding="utf-8") as f:
                index = json.load(f)
            shards = sorted(set(index["weight_map"].values()))
        except OSError as e:
            raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConvertError("%s: not a checkpoint index (no weight_map): %s" % (path, e))
        tensors, dtypes = {}, {}
        for shard in shards:
            t, d = read_weights(os.path.join(os.path.dirname(path), shard), trust)
            tensors.update(t)
            dtypes.update(d)
        return tensors, dtypes
    if path.endswith(".safetensors"):
        t, d, _ = read_safetensors(path)
        return t, d
    return read_torch_checkpoint(path, trust)


def find_weights(folder):
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    raise ConvertError("%s: no model.safetensors or pytorch_model.bin in this folder" % folder)


# ---- config ----------------------------------------------------------------------------------------

def read_json(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConvertError("%s: config file not found (pass the model's config.json with --config)" % path)
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise ConvertError("%s: invalid JSON: %s" % (path, e))


def arch_config(hf, where, base=None):
    """The architecture keys blendfuse reads, from a Hugging Face config.json dict (absent keys
    keep `base`, default wav2vec2-base-960h). Rejects what the C++ module does not implement."""
    if not isinstance(hf, dict):
        raise ConvertError("%s: config must be a JSON object" % where)
    c = dict(BASE_CONFIG if base is None else base)
    mt = hf.get("model_type", "wav2vec2")
    if mt != "wav2vec2":
        raise ConvertError("%s: model_type \"%s\" is not supported (only \"wav2vec2\")" % (where, mt))
    try:
        for k in ("conv_dim", "conv_kernel", "conv_stride"):
            if k in hf:
                c[k] = [int(v) for v in hf[k]]
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
            if k in hf:
                c[k] = int(hf[k])
        if "layer_norm_eps" in hf:
            c["layer_norm_eps"] = float(hf["layer_norm_eps"])
        if "do_normalize" in hf:
            c["do_normalize"] = bool(hf["do_normalize"])
    except (TypeError, ValueError) as e:
        raise ConvertError("%s: bad config value: %s" % (where, e))
    if hf.get("feat_extract_norm", "group") != "group":
        raise ConvertError("%s: feat_extract_norm \"%s\" is not supported (only \"group\", the base model's)"
                           % (where, hf["feat_extract_norm"]))
    if hf.get("do_stable_layer_norm", False):
        raise ConvertError("%s: do_stable_layer_norm (pre-norm layers, the large-lv60 variant) is not supported"
                           % where)
    if hf.get("conv_bias", False):
        raise ConvertError("%s: conv_bias = true is not supported" % where)
    if hf.get("add_adapter", False):
        raise ConvertError("%s: add_adapter = true is not supported" % where)
    for k in ("hidden_act", "feat_extract_activation"):
        if hf.get(k, "gelu") != "gelu":
            raise ConvertError("%s: %s must be \"gelu\", got \"%s\"" % (where, k, hf[k]))
    n = len(c["conv_dim"])
    if n == 0 or len(c["conv_kernel"]) != n or len(c["conv_stride"]) != n:
        raise ConvertError("%s: conv_dim, conv_kernel and conv_stride must be non-empty and of equal length"
                           % where)
    if "num_feat_extract_layers" in hf and int(hf["num_feat_extract_layers"]) != n:
        raise ConvertError("%s: num_feat_extract_layers %s does not match conv_dim (%d layers)"
                           % (where, hf["num_feat_extract_layers"], n))
    if c["hidden_size"] % c["num_attention_heads"]:
        raise ConvertError("%s: hidden_size %d is not divisible by num_attention_heads %d"
                           % (where, c["hidden_size"], c["num_attention_heads"]))
    if c["hidden_size"] % c["num_conv_pos_embedding_groups"]:
        raise ConvertError("%s: hidden_size %d is not divisible by num_conv_pos_embedding_groups %d"
                           % (where, c["hidden_size"], c["num_conv_pos_embedding_groups"]))
    return c


def expected_shapes(c):
    """{Hugging Face name (no prefix): shape} of every encoder tensor for config `c`."""
    s = {}
    cin = 1
    for i, (cout, k) in enumerate(zip(c["conv_dim"], c["conv_kernel"])):
        s["feature_extractor.conv_layers.%d.conv.weight" % i] = (cout, cin, k)
        cin = cout
    c0, C, E, F = c["conv_dim"][0], c["conv_dim"][-1], c["hidden_size"], c["intermediate_size"]
    K, G = c["num_conv_pos_embeddings"], c["num_conv_pos_embedding_groups"]
    s["feature_extractor.conv_layers.0.layer_norm.weight"] = (c0,)
    s["feature_extractor.conv_layers.0.layer_norm.bias"] = (c0,)
    s["feature_projection.layer_norm.weight"] = (C,)
    s["feature_projection.layer_norm.bias"] = (C,)
    s["feature_projection.projection.weight"] = (E, C)
    s["feature_projection.projection.bias"] = (E,)
    s["encoder.pos_conv_embed.conv.weight_g"] = (1, 1, K)
    s["encoder.pos_conv_embed.conv.weight_v"] = (E, E // G, K)
    s["encoder.pos_conv_embed.conv.bias"] = (E,)
    s["encoder.layer_norm.weight"] = (E,)
    s["encoder.layer_norm.bias"] = (E,)
    for n in range(c["num_hidden_layers"]):
        b = "encoder.layers.%d." % n
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[b + "attention.%s.weight" % p] = (E, E)
            s[b + "attention.%s.bias" % p] = (E,)
        s[b + "layer_norm.weight"] = (E,)
        s[b + "layer_norm.bias"] = (E,)
        s[b + "feed_forward.intermediate_dense.weight"] = (F, E)
        s[b + "feed_forward.intermediate_dense.bias"] = (F,)
        s[b + "feed_forward.output_dense.weight"] = (E, F)
        s[b + "feed_forward.output_dense.bias"] = (E,)
        s[b + "final_layer_norm.weight"] = (E,)
        s[b + "final_layer_norm.bias"] = (E,)
    return s


# ---- names -----------------------------------------------------------------------------------------

def torchaudio_to_hf(rel):
    """torchaudio wav2vec2_model() name -> Hugging Face name (None outside the encoder)."""
    if rel.startswith("feature_extractor."):
        return rel
    if rel.startswith("encoder.feature_projection."):
        return rel[len("encoder."):]
    if rel.startswith("encoder.transformer."):
        return "encoder." + rel[len("encoder.transformer."):]
    return None


def detect_scheme(names, where, prefix=None):
    """Returns ("hf" | "torchaudio", prefix) of the encoder in `names`."""
    names = set(names)
    if prefix is not None:
        if prefix + _PROBE in names:
            return "hf", prefix
        if prefix + "encoder." + _PROBE in names:
            return "torchaudio", prefix
        raise ConvertError("%s: no wav2vec2 encoder under prefix '%s' (neither '%s' nor '%s' is in the file)"
                           % (where, prefix, prefix + _PROBE, prefix + "encoder." + _PROBE))
    found = []
    for n in sorted(names):
        if not n.endswith(_PROBE):
            continue
        p = n[:-len(_PROBE)]
        if p.endswith("encoder.") and any(m.startswith(p + "transformer.") for m in names):
            found.append(("torchaudio", p[:-len("encoder.")]))
        else:
            found.append(("hf", p))
    if not found:
        raise ConvertError("%s: no wav2vec2 encoder found (no tensor named '...%s'; %d tensors in the file)"
                           % (where, _PROBE, len(names)))
    if len(found) > 1:
        raise ConvertError("%s: several wav2vec2 encoders in the file (prefixes %s); choose one with --prefix"
                           % (where, ", ".join("'%s'" % p for _, p in found)))
    return found[0]


def _norm_weight_norm(rel):
    for old, new in ((".parametrizations.weight.original0", ".weight_g"),
                     (".parametrizations.weight.original1", ".weight_v")):
        if rel.endswith(old):
            return rel[:-len(old)] + new
    return rel


def _head_reason(name):
    first = name.split(".", 1)[0]
    return _DROP_HEADS.get(first, "not part of the wav2vec2 encoder")


def extract_encoder(tensors, where, prefix=None):
    """Splits a state dict into the encoder's tensors under Hugging Face names (no prefix) and the
    rest. Returns (scheme, prefix, {hf name: (array, source name)}, [(dropped name, reason)],
    [names outside the prefix])."""
    scheme, prefix = detect_scheme(tensors.keys(), where, prefix)
    enc, dropped, outside = {}, [], []
    for name in sorted(tensors):
        if not name.startswith(prefix):
            outside.append(name)
            continue
        rel = name[len(prefix):]
        if scheme == "torchaudio":
            hf = torchaudio_to_hf(rel)
            if hf is None:
                dropped.append((name, _head_reason(rel)))
                continue
        else:
            hf = rel
        hf = _norm_weight_norm(hf)
        if hf in _DROP_REL:
            dropped.append((name, _DROP_REL[hf]))
            continue
        if hf in enc:
            raise ConvertError("%s: tensors '%s' and '%s' both give '%s'" % (where, enc[hf][1], name, hf))
        enc[hf] = (tensors[name], name)
    return scheme, prefix, enc, dropped, outside


def infer_config(enc, base=None):
    """Sizes readable from the tensor shapes, over `base` (default wav2vec2-base-960h): conv_dim,
    conv_kernel, hidden_size, intermediate_size, num_hidden_layers, num_conv_pos_embeddings,
    num_conv_pos_embedding_groups. Strides and heads are not in the shapes: they stay `base`'s, and
    a ConvertError (without file) is raised when the shapes are not base-like enough for that."""
    c = dict(BASE_CONFIG if base is None else base)
    dims, kernels = [], []
    while "feature_extractor.conv_layers.%d.conv.weight" % len(dims) in enc:
        w = enc["feature_extractor.conv_layers.%d.conv.weight" % len(dims)][0]
        if w.ndim != 3:
            break
        dims.append(int(w.shape[0]))
        kernels.append(int(w.shape[2]))
    if dims:
        if len(dims) != len(c["conv_stride"]) or kernels != c["conv_kernel"]:
            raise ConvertError("the conv feature extractor (kernels %s) differs from wav2vec2-base's (%s), so "
                               "its strides are unknown: pass the model's config.json"
                               % (kernels, c["conv_kernel"]))
        c["conv_dim"], c["conv_kernel"] = dims, kernels
    w = enc.get("feature_projection.projection.weight", (None,))[0]
    if w is not None and w.ndim == 2:
        if int(w.shape[0]) != c["hidden_size"] and int(w.shape[0]) % c["num_attention_heads"]:
            raise ConvertError("hidden size %d (from feature_projection.projection.weight) is not divisible by "
                               "%d heads: pass the model's config.json" % (w.shape[0], c["num_attention_heads"]))
        if int(w.shape[0]) != c["hidden_size"]:
            raise ConvertError("hidden size %d (from feature_projection.projection.weight) differs from "
                               "wav2vec2-base's %d, so the number of attention heads is unknown: pass the "
                               "model's config.json" % (w.shape[0], c["hidden_size"]))
    n = 0
    while "encoder.layers.%d.attention.q_proj.weight" % n in enc:
        n += 1
    c["num_hidden_layers"] = n
    w = enc.get("encoder.layers.0.feed_forward.intermediate_dense.weight", (None,))[0]
    if w is not None and w.ndim == 2:
        c["intermediate_size"] = int(w.shape[0])
    v = enc.get("encoder.pos_conv_embed.conv.weight_v", (None,))[0]
    if v is None:
        v = enc.get("encoder.pos_conv_embed.conv.weight", (None,))[0]
    if v is not None and v.ndim == 3 and v.shape[1] > 0 and c["hidden_size"] % v.shape[1] == 0:
        c["num_conv_pos_embeddings"] = int(v.shape[2])
        c["num_conv_pos_embedding_groups"] = c["hidden_size"] // int(v.shape[1])
    return c


def _shape_str(s):
    return "(" + ", ".join(str(int(d)) for d in s) + ")"


def check_encoder(enc, cfg, where, config_where="the config"):
    """Returns {hf name: float32 array} exactly matching `cfg`; errors name `where`."""
    shapes = expected_shapes(cfg)
    enc = dict(enc)
    # A plain positional conv weight (weight norm removed) -> g = per-tap norm, v = weight.
    plain = "encoder.pos_conv_embed.conv.weight"
    if plain in enc and "encoder.pos_conv_embed.conv.weight_g" not in enc \
            and "encoder.pos_conv_embed.conv.weight_v" not in enc:
        w, src = enc.pop(plain)
        w = np.asarray(w, dtype=np.float64)
        if w.ndim == 3:
            g = np.sqrt((w * w).sum(axis=(0, 1))).reshape(1, 1, -1)
            enc["encoder.pos_conv_embed.conv.weight_g"] = (g, src)
        enc["encoder.pos_conv_embed.conv.weight_v"] = (w, src)
    missing = [n for n in shapes if n not in enc]
    if missing:
        more = "" if len(missing) <= 5 else " and %d more" % (len(missing) - 5)
        raise ConvertError("%s: missing tensor%s %s%s (the encoder described by %s needs %d tensors)"
                           % (where, "s" if len(missing) > 1 else "", ", ".join("'%s'" % m for m in missing[:5]),
                              more, config_where, len(shapes)))
    extra = [enc[n][1] for n in sorted(enc) if n not in shapes]
    if extra:
        more = "" if len(extra) <= 5 else " and %d more" % (len(extra) - 5)
        raise ConvertError("%s: unexpected encoder tensor%s %s%s (not in the architecture of %s: wrong "
                           "config?)" % (where, "s" if len(extra) > 1 else "", ", ".join("'%s'" % m for m in extra[:5]),
                                         more, config_where))
    out = {}
    for n, shape in shapes.items():
        a, src = enc[n]
        if tuple(a.shape) != tuple(shape):
            raise ConvertError("%s: tensor '%s' has shape %s, expected %s (from %s)"
                               % (where, src, _shape_str(a.shape), _shape_str(shape), config_where))
        if a.dtype.kind != "f":
            raise ConvertError("%s: tensor '%s' has non-float dtype %s" % (where, src, a.dtype))
        a = np.asarray(a, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ConvertError("%s: tensor '%s' contains NaN or Inf (first at flat index %d)" % (where, src, bad[0]))
        out[n] = a
    return out


_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def describe_dtypes(dtypes, names):
    seen = sorted({_DTYPE_NAMES.get(dtypes.get(n, "F32"), dtypes.get(n, "F32")) for n in names})
    conv = [d for d in seen if d != "float32"]
    return ("converted %s -> float32" % "/".join(conv)) if conv else "float32"


# ---- conversion ------------------------------------------------------------------------------------

def resolve_inputs(src, config=None):
    """(weights path, config path or None, preprocessor path or None) for a folder or a file."""
    if os.path.isdir(src):
        weights = find_weights(src)
        folder = src
    else:
        if not os.path.exists(src):
            raise ConvertError("%s: no such file or folder" % src)
        weights = src
        folder = os.path.dirname(os.path.abspath(src))
    cfg = config if config is not None else os.path.join(folder, "config.json")
    pre = os.path.join(os.path.dirname(os.path.abspath(cfg)), "preprocessor_config.json")
    return weights, cfg, (pre if os.path.isfile(pre) else None)


def convert(src, out, config=None, prefix=None, out_prefix="wav2vec2.", trust=False, log=print):
    """Converts `src` (folder or weights file) to `out`; returns the config written."""
    weights, cfg_path, pre_path = resolve_inputs(src, config)
    if not os.path.isfile(cfg_path):
        raise ConvertError("%s: config file not found (pass the model's config.json with --config)" % cfg_path)
    hf = read_json(cfg_path)
    if pre_path is not None and "do_normalize" not in hf:
        pre = read_json(pre_path)
        if isinstance(pre, dict) and "do_normalize" in pre:
            hf = dict(hf, do_normalize=bool(pre["do_normalize"]))
    cfg = arch_config(hf, cfg_path)
    tensors, dtypes = read_weights(weights, trust)
    scheme, prefix, enc, dropped, outside = extract_encoder(tensors, weights, prefix)
    dropped += [(n, _head_reason(n)) for n in outside]
    enc = check_encoder(enc, cfg, weights, config_where=cfg_path)
    write_safetensors(out, {out_prefix + n: a for n, a in enc.items()},
                      {"wav2vec2_config": json.dumps(cfg), "converted_from": os.path.basename(weights)})
    log("%s: %s names%s, %d encoder tensors (%s), %d layers, hidden %d"
        % (weights, "torchaudio" if scheme == "torchaudio" else "Hugging Face",
           " under '%s'" % prefix if prefix else "", len(enc), describe_dtypes(dtypes, [n for n in tensors
                                                                                     if n.startswith(prefix)]),
           cfg["num_hidden_layers"], cfg["hidden_size"]))
    log_dropped_and_written(log, dropped, out)
    return cfg


def log_dropped_and_written(log, dropped, out):
    """Reports the tensors a conversion left out (name, reason) and the file it wrote."""
    if dropped:
        log("dropped %d tensor%s:" % (len(dropped), "s" if len(dropped) > 1 else ""))
        for n, why in dropped:
            log("  %s  (%s)" % (n, why))
    log("wrote %s" % out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("src", help="checkpoint folder, or a .safetensors / .bin / .pt / .pth / *.index.json file")
    p.add_argument("-o", "--out", required=True, help="output .safetensors")
    p.add_argument("--config", default=None, help="Hugging Face config.json (default: the one next to the weights)")
    p.add_argument("--prefix", default=None,
                   help="name prefix of the encoder in the checkpoint (default: detected, e.g. 'wav2vec2.' or '')")
    p.add_argument("--trust", action="store_true",
                   help="load pickled checkpoints without weights_only (runs arbitrary code from the file)")
    args = p.parse_args(argv)
    try:
        convert(args.src, args.out, args.config, args.prefix, trust=args.trust)
    except ConvertError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
