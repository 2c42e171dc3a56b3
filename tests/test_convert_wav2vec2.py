#!/usr/bin/python3
"""Tests of scripts/convert_wav2vec2.py and `blendfuse features` against torchaudio.

    /usr/bin/python3 tests/test_convert_wav2vec2.py PATH/TO/blendfuse_cli [unittest args]

Synthetic checkpoints only (random weights, fixed seeds): torchaudio.models.wav2vec2_model() is the
reference; its state dict is renamed to Hugging Face names (torchaudio's aux -> lm_head) and saved
as a Hugging Face folder (pytorch_model.bin or model.safetensors + config.json), converted, run
through `blendfuse features`, and compared with torchaudio's last hidden state (evaluated in
float64 from the same, possibly fp16/bf16-rounded, weights). Needs torch and torchaudio.
"""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
import torchaudio

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "scripts")
sys.path.insert(0, SCRIPTS)
import convert_wav2vec2 as cw  # noqa: E402

CLI = os.environ.get("BLENDFUSE_CLI", "")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Tiny sizes with wav2vec2-base's conv kernels and strides (50 Hz features).
TINY = dict(conv_dim=[16] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

# facebook/wav2vec2-base-960h's config.json (architecture and the other keys such a file holds).
BASE_960H_CONFIG = {
    "activation_dropout": 0.1, "apply_spec_augment": True, "architectures": ["Wav2Vec2ForCTC"],
    "attention_dropout": 0.1, "bos_token_id": 1, "codevector_dim": 256, "contrastive_logits_temperature": 0.1,
    "conv_bias": False, "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "sum", "ctc_zero_infinity": False,
    "diversity_loss_weight": 0.1, "do_stable_layer_norm": False, "eos_token_id": 2,
    "feat_extract_activation": "gelu", "feat_extract_dropout": 0.0, "feat_extract_norm": "group",
    "feat_proj_dropout": 0.1, "feat_quantizer_dropout": 0.0, "final_dropout": 0.1, "gradient_checkpointing": False,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "layerdrop": 0.1,
    "mask_feature_length": 10, "mask_feature_prob": 0.0, "mask_time_length": 10, "mask_time_prob": 0.05,
    "model_type": "wav2vec2", "num_attention_heads": 12, "num_codevector_groups": 2,
    "num_codevectors_per_group": 320, "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128,
    "num_feat_extract_layers": 7, "num_hidden_layers": 12, "num_negatives": 100, "pad_token_id": 0,
    "proj_codevector_dim": 256, "transformers_version": "4.7.0.dev0", "vocab_size": 32,
}
BASE_960H_PREPROCESSOR = {"do_normalize": True, "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
                          "return_attention_mask": False, "sampling_rate": 16000}


# ---- model construction ------------------------------------------------------------------------------

def hf_config(sizes=TINY, **extra):
    c = {"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForCTC"], "conv_bias": False,
         "feat_extract_norm": "group", "do_stable_layer_norm": False, "hidden_act": "gelu",
         "feat_extract_activation": "gelu", "layer_norm_eps": 1e-5, "vocab_size": 32,
         "num_feat_extract_layers": len(sizes["conv_dim"])}
    c.update({k: (list(v) if isinstance(v, list) else v) for k, v in sizes.items()})
    c.update(extra)
    return c


def torchaudio_model(sizes=TINY, seed=0):
    """torchaudio wav2vec2_model of `sizes` (no aux head) with deterministic random float32 weights.
    Returns (model in eval mode, {torchaudio name: float32 tensor})."""
    torch.manual_seed(seed)
    model = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=list(zip(sizes["conv_dim"], sizes["conv_kernel"], sizes["conv_stride"])),
        extractor_conv_bias=False, encoder_embed_dim=sizes["hidden_size"], encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=sizes["num_conv_pos_embeddings"],
        encoder_pos_conv_groups=sizes["num_conv_pos_embedding_groups"],
        encoder_num_layers=sizes["num_hidden_layers"], encoder_num_heads=sizes["num_attention_heads"],
        encoder_attention_dropout=0.0, encoder_ff_interm_features=sizes["intermediate_size"],
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
        encoder_layer_drop=0.0, aux_num_out=None)
    sd = model.state_dict()
    new = {}
    g = torch.Generator().manual_seed(seed + 1)
    for name in sorted(sd):
        shape = sd[name].shape
        if name.endswith("weight_g"):
            t = 1.5 * (1.0 + 0.2 * torch.randn(shape, generator=g))
        elif name.endswith("weight_v"):
            t = torch.randn(shape, generator=g)
        elif "norm" in name and name.endswith(".weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        new[name] = t.float()
    model.load_state_dict(new)
    return model.eval(), new


def to_hf(ta_sd, prefix="wav2vec2."):
    """torchaudio names -> Hugging Face names (under `prefix`)."""
    out = {}
    for n, t in ta_sd.items():
        if n.startswith("encoder.feature_projection."):
            hf = n[len("encoder."):]
        elif n.startswith("encoder.transformer."):
            hf = "encoder." + n[len("encoder.transformer."):]
        else:
            assert n.startswith("feature_extractor."), n
            hf = n
        out[prefix + hf] = t
    return out


def ctc_extras(E, seed=5, prefix="wav2vec2."):
    """What a Wav2Vec2ForCTC state dict holds besides the encoder."""
    g = torch.Generator().manual_seed(seed)
    return {"lm_head.weight": torch.randn(32, E, generator=g), "lm_head.bias": torch.randn(32, generator=g),
            prefix + "masked_spec_embed": torch.rand(E, generator=g)}


def parametrize(sd):
    """weight_g / weight_v -> parametrizations.weight.original0 / original1 (torch >= 2.1 spelling)."""
    out = {}
    for n, t in sd.items():
        n = n.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        n = n.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        out[n] = t
    return out


def round_weights(model, ta_sd, dtype):
    """Rounds the model's weights to `dtype` (fp16/bf16) and back; returns the rounded state dict."""
    r = {n: t.to(dtype).float() for n, t in ta_sd.items()}
    model.load_state_dict(r)
    return r


# ---- files ---------------------------------------------------------------------------------------------

def save_safetensors(path, tensors, dtype="F32", metadata=None):
    """Independent of the converter's writer: {name: torch tensor} stored as F32, F16 or BF16."""
    header = {"__metadata__": metadata} if metadata else {}
    blobs, off = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().float().contiguous()
        if dtype == "F32":
            b = t.numpy().astype("<f4").tobytes()
        elif dtype == "F16":
            b = t.numpy().astype("<f2").tobytes()
        elif dtype == "BF16":
            b = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


def write_wav(path, samples, rate=16000):
    """32-bit float mono WAV (exactly representable, so the C++ side reads the same samples)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    fact = struct.pack("<I", len(samples))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact \
        + b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_audio(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / 16000.0
    x = 0.2 * torch.sin(2 * math.pi * 180 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)) \
        + 0.05 * torch.randn(n, generator=g, dtype=torch.float64) + 0.01
    return x.float()


def normalise(audio):
    """Wav2Vec2FeatureExtractor(do_normalize=True) in float64: (x - mean) / sqrt(var + 1e-7)."""
    x = audio.double().reshape(1, -1)
    return (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-7)


def reference_hidden(model, audio, dtype=torch.float64):
    """torchaudio's last hidden state (T, E) as float64 numpy, evaluated in `dtype` (model weights as
    loaded)."""
    m = model.to(dtype)
    with torch.no_grad():
        h, _ = m(normalise(audio).to(dtype))
    model.float()
    return h[0].double().numpy()


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def run_features(model_path, wav, out):
    r = run([CLI, "features", "--model", model_path, "--wav", wav, "--out", out])
    if r.returncode != 0:
        raise AssertionError("blendfuse features failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
    return np.load(out)


def assert_close(tc, got, ref, rel=1e-4, what="", floor=1.0):
    """max |got - ref| <= rel * max(max |ref|, floor)."""
    tc.assertEqual(got.shape, ref.shape, what)
    err = float(np.abs(got.astype(np.float64) - ref).max())
    scale = float(np.abs(ref).max())
    tc.assertLessEqual(err, rel * max(scale, floor), "%s: max |diff| %.3g vs max |ref| %.3g" % (what, err, scale))


def quiet(*_a, **_k):
    pass


class ConvertWav2Vec2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (CLI and os.path.exists(CLI)):
            raise unittest.SkipTest("pass the blendfuse_cli path as the first argument")
        cls.model, cls.ta = torchaudio_model(TINY, seed=0)
        cls.audio = test_audio(4000)  # 0.25 s -> 12 frames
        cls.tmp = tempfile.TemporaryDirectory()
        cls.wav = os.path.join(cls.tmp.name, "x.wav")
        write_wav(cls.wav, cls.audio.numpy())
        cls.ref = reference_hidden(cls.model, cls.audio)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp.name)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def hf_folder(self, sd, name="hf", weights="pytorch_model.bin", config=None, preprocessor=None, dtype="F32"):
        folder = self.path(name)
        os.makedirs(folder, exist_ok=True)
        if weights.endswith(".bin"):
            torch.save(sd, os.path.join(folder, weights))
        else:
            save_safetensors(os.path.join(folder, weights), sd, dtype, {"format": "pt"})
        if config is not False:
            write_json(os.path.join(folder, "config.json"), config or hf_config())
        if preprocessor:
            write_json(os.path.join(folder, "preprocessor_config.json"), preprocessor)
        return folder

    def convert_fails(self, *args):
        r = run([PY, os.path.join(SCRIPTS, "convert_wav2vec2.py")] + list(args))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        return r.stderr

    def convert_error(self, *args, **kw):
        with self.assertRaises(cw.ConvertError) as cm:
            cw.convert(*args, log=quiet, **kw)
        return str(cm.exception)

    # -- conversions that must reproduce torchaudio ------------------------------------------------------

    def test_ctc_pytorch_model_bin(self):
        """Wav2Vec2ForCTC layout (wav2vec2. prefix, lm_head, masked_spec_embed) as pytorch_model.bin."""
        sd = to_hf(self.ta)
        sd.update(ctc_extras(32))
        folder = self.hf_folder(sd, preprocessor=BASE_960H_PREPROCESSOR)
        out = self.path("w2v.safetensors")
        r = run([PY, os.path.join(SCRIPTS, "convert_wav2vec2.py"), folder, "-o", out])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for dropped in ("lm_head.weight", "lm_head.bias", "wav2vec2.masked_spec_embed"):
            self.assertIn(dropped, r.stdout)
        tensors, _, meta = cw.read_safetensors(out)
        self.assertEqual(len(tensors), len(cw.expected_shapes(hf_config())))
        self.assertTrue(all(n.startswith("wav2vec2.") for n in tensors))
        cfg = json.loads(meta["wav2vec2_config"])
        self.assertEqual(cfg["hidden_size"], 32)
        self.assertTrue(cfg["do_normalize"])
        got = run_features(out, self.wav, self.path("f.npy"))
        assert_close(self, got, self.ref, what="features vs torchaudio (bin)")

    def test_safetensors_fp16_parametrized_pretraining(self):
        """model.safetensors in float16, parametrizations.* weight-norm names, pre-training extras."""
        model, ta = torchaudio_model(TINY, seed=0)
        rounded = round_weights(model, ta, torch.float16)
        ref = reference_hidden(model, self.audio)
        sd = parametrize(to_hf(rounded))
        g = torch.Generator().manual_seed(9)
        sd.update({"wav2vec2.masked_spec_embed": torch.rand(32, generator=g),
                   "quantizer.codevectors": torch.randn(1, 8, 4, generator=g),
                   "quantizer.weight_proj.weight": torch.randn(8, 16, generator=g),
                   "quantizer.weight_proj.bias": torch.randn(8, generator=g),
                   "project_q.weight": torch.randn(4, 4, generator=g), "project_q.bias": torch.randn(4, generator=g),
                   "project_hid.weight": torch.randn(4, 32, generator=g),
                   "project_hid.bias": torch.randn(4, generator=g)})
        folder = self.hf_folder(sd, weights="model.safetensors", dtype="F16",
                                config=hf_config(architectures=["Wav2Vec2ForPreTraining"]))
        out = self.path("w2v.safetensors")
        lines = []
        cw.convert(folder, out, log=lines.append)
        text = "\n".join(lines)
        self.assertIn("float16 -> float32", text)
        for n in ("quantizer.codevectors", "project_q.weight", "project_hid.bias", "wav2vec2.masked_spec_embed"):
            self.assertIn(n, text)
        tensors, _, _ = cw.read_safetensors(out)
        self.assertIn("wav2vec2.encoder.pos_conv_embed.conv.weight_g", tensors)
        self.assertTrue(all(a.dtype == np.float32 for a in tensors.values()))
        got = run_features(out, self.wav, self.path("f.npy"))
        assert_close(self, got, ref, what="features vs torchaudio (fp16 safetensors)")

    def test_torchaudio_names_bf16_plain_pos_weight(self):
        """torchaudio names (aux head dropped), bfloat16 .pt, --config given separately; a second file
        with the weight norm folded into a plain positional conv weight."""
        model, ta = torchaudio_model(TINY, seed=0)
        rounded = round_weights(model, ta, torch.bfloat16)
        ref = reference_hidden(model, self.audio)
        sd = {n: t.to(torch.bfloat16) for n, t in rounded.items()}
        sd["aux.weight"] = torch.randn(32, 32).to(torch.bfloat16)
        sd["aux.bias"] = torch.randn(32).to(torch.bfloat16)
        pt = self.path("ta.pt")
        torch.save(sd, pt)
        cfg = self.path("cfg", "config.json")
        os.makedirs(os.path.dirname(cfg))
        write_json(cfg, hf_config())
        out = self.path("w2v.safetensors")
        lines = []
        cw.convert(pt, out, config=cfg, log=lines.append)
        self.assertIn("torchaudio names", lines[0])
        self.assertIn("bfloat16 -> float32", lines[0])
        self.assertIn("aux.weight", "\n".join(lines))
        assert_close(self, run_features(out, self.wav, self.path("f.npy")), ref,
                     what="features vs torchaudio (bf16 torchaudio names)")

        # nn.utils.remove_weight_norm'ed positional conv: weight = g * v / |v| (float32 here).
        model2, ta2 = torchaudio_model(TINY, seed=0)
        conv = model2.encoder.transformer.pos_conv_embed.conv
        torch.nn.utils.remove_weight_norm(conv)
        sd2 = to_hf(model2.state_dict(), prefix="")
        self.assertIn("encoder.pos_conv_embed.conv.weight", sd2)
        st = self.path("plain.safetensors")
        save_safetensors(st, sd2)
        out2 = self.path("w2v_plain.safetensors")
        cw.convert(st, out2, config=cfg, log=quiet)
        assert_close(self, run_features(out2, self.wav, self.path("f2.npy")), self.ref,
                     what="features vs torchaudio (plain positional conv weight)")

    def test_base_size_real_names(self):
        """wav2vec2-base sizes and the real base-960h config.json, Wav2Vec2ForCTC names, fp16."""
        sizes = {k: BASE_960H_CONFIG[k] for k in TINY}
        model, ta = torchaudio_model(sizes, seed=11)
        rounded = round_weights(model, ta, torch.float16)
        audio = test_audio(8000, seed=4)  # 0.5 s -> 24 frames
        ref = reference_hidden(model, audio, torch.float32)  # float64 would take seconds more
        sd = to_hf(rounded)
        sd.update(ctc_extras(768))
        folder = self.hf_folder(sd, name="wav2vec2-base-960h", weights="model.safetensors", dtype="F16",
                                config=BASE_960H_CONFIG, preprocessor=BASE_960H_PREPROCESSOR)
        del sd, rounded, ta
        out = self.path("w2v_base.safetensors")
        cfg = cw.convert(folder, out, log=quiet)
        self.assertEqual(cfg, dict(cw.BASE_CONFIG))
        wav = self.path("base.wav")
        write_wav(wav, audio.numpy())
        got = run_features(out, wav, self.path("f.npy"))
        self.assertEqual(got.shape, (24, 768))
        assert_close(self, got, ref, what="features vs torchaudio (base size)")

    # -- errors ----------------------------------------------------------------------------------------

    def test_missing_config(self):
        folder = self.hf_folder(to_hf(self.ta), config=False)
        err = self.convert_fails(folder, "-o", self.path("o.safetensors"))
        self.assertIn(os.path.join(folder, "config.json"), err)
        self.assertIn("config file not found", err)
        self.assertFalse(os.path.exists(self.path("o.safetensors")))

    def test_misshaped_missing_extra_tensors(self):
        sd = to_hf(self.ta)
        bad = dict(sd)
        bad["wav2vec2.encoder.layers.1.attention.q_proj.weight"] = torch.zeros(32, 33)
        st = self.path("bad.safetensors")
        save_safetensors(st, bad)
        write_json(self.path("config.json"), hf_config())
        err = self.convert_fails(st, "-o", self.path("o.safetensors"))
        self.assertIn(st + ":", err)
        self.assertIn("wav2vec2.encoder.layers.1.attention.q_proj.weight", err)
        self.assertIn("(32, 33)", err)

        missing = dict(sd)
        del missing["wav2vec2.encoder.layer_norm.bias"]
        save_safetensors(st, missing)
        err = self.convert_error(st, self.path("o.safetensors"))
        self.assertIn(st, err)
        self.assertIn("missing tensor 'encoder.layer_norm.bias'", err)

        # A config with one layer less than the file: the second layer's tensors are unexpected.
        write_json(self.path("config.json"), hf_config(num_hidden_layers=1))
        save_safetensors(st, sd)
        err = self.convert_error(st, self.path("o.safetensors"))
        self.assertIn("unexpected encoder tensors 'wav2vec2.encoder.layers.1.", err)

        # Unsupported architectures are named with the config file.
        write_json(self.path("config.json"), hf_config(feat_extract_norm="layer"))
        err = self.convert_error(st, self.path("o.safetensors"))
        self.assertIn(self.path("config.json"), err)
        self.assertIn("feat_extract_norm", err)

        # NaN weights.
        nan = dict(sd)
        nan["wav2vec2.feature_projection.projection.bias"] = torch.full((32,), float("nan"))
        write_json(self.path("config.json"), hf_config())
        save_safetensors(st, nan)
        self.assertIn("NaN", self.convert_error(st, self.path("o.safetensors")))
        self.assertFalse(os.path.exists(self.path("o.safetensors")))

    def test_truncated_files(self):
        sd = to_hf(self.ta)
        folder = self.hf_folder(sd)
        binf = os.path.join(folder, "pytorch_model.bin")
        with open(binf, "rb") as f:
            data = f.read()
        with open(binf, "wb") as f:
            f.write(data[:len(data) // 2])
        err = self.convert_fails(folder, "-o", self.path("o.safetensors"))
        self.assertIn(binf + ":", err)

        st = self.path("m.safetensors")
        save_safetensors(st, sd)
        with open(st, "rb") as f:
            data = f.read()
        with open(st, "wb") as f:
            f.write(data[:-100])
        write_json(self.path("config.json"), hf_config())
        err = self.convert_error(st, self.path("o.safetensors"))
        self.assertIn(st + ":", err)
        self.assertIn("truncated", err)

        # A truncated converted file is refused by the C++ loader, naming it.
        save_safetensors(st, sd)
        out = self.path("o.safetensors")
        cw.convert(st, out, log=quiet)
        with open(out, "rb") as f:
            data = f.read()
        with open(out, "wb") as f:
            f.write(data[:-64])
        r = run([CLI, "features", "--model", out, "--wav", self.wav, "--out", self.path("f.npy")])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(out, r.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        CLI = os.path.abspath(sys.argv.pop(1))
    torch.set_num_threads(1)
    unittest.main()
