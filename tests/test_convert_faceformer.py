#!/usr/bin/python3
"""Tests of scripts/convert_faceformer.py and `blendfuse speak` against FaceFormer's predict().

    /usr/bin/python3 tests/test_convert_faceformer.py PATH/TO/blendfuse_cli [unittest args]

A FaceFormer-shaped state dict with random weights (fixed seeds) and tiny sizes: the audio encoder
is a torchaudio wav2vec2_model (7 conv layers of 16 channels with wav2vec2-base's kernels and
strides, hidden 32, 2 layers) saved under FaceFormer's `audio_encoder.<Hugging Face name>`; the
decoder is FaceFormer's module layout (audio_feature_map, vertice_map, PPE with its registered
`pe` buffer, one nn.TransformerDecoderLayer with 4 heads, vertice_map_r, obj_vector) with V = 7,
d = 16, period 25, the 8 VOCASET training subjects. The reference is FaceFormer's predict() loop
(faceformer.py, "vocaset": features resampled 50 -> 30 fps with align_corners=True before the
feature projection; frame 0 input = style embedding alone; then vertice_map(previous output) +
style; PPE; biased causal mask; alignment mask; output + template) in float64.
"""

import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "scripts")
sys.path.insert(0, SCRIPTS)
sys.path.insert(0, HERE)
import convert_faceformer as cf  # noqa: E402
import test_convert_wav2vec2 as tw  # noqa: E402
sys.path.insert(0, os.path.join(HERE, "torch"))
import gen_faceformer  # noqa: E402

CLI = os.environ.get("BLENDFUSE_CLI", "")
PY = tw.PY

V, D, PERIOD, N_SUBJECTS = 7, 16, 25, 8
SUBJECTS = cf.DEFAULT_SUBJECTS
OTHER_SUBJECTS = ["FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"]  # VOCASET val subjects


# ---- FaceFormer (faceformer.py), the parts predict() uses ----------------------------------------------

# FaceFormer's masks: the float64 copies of tests/torch/gen_faceformer.py (the decoder cross-check).
init_biased_mask = gen_faceformer.init_biased_mask
enc_dec_mask = gen_faceformer.enc_dec_mask


class PeriodicPositionalEncoding(nn.Module):
    def __init__(self, d_model, period=25, max_seq_len=600):
        super().__init__()
        pe = torch.zeros(period, d_model)
        position = torch.arange(0, period, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0)
        repeat_num = (max_seq_len // period) + 1
        self.register_buffer("pe", pe.repeat(1, repeat_num, 1))

    def forward(self, x):
        return x + self.pe[:, :x.size(1), :]


class FaceFormerDecoder(nn.Module):
    """FaceFormer's modules other than audio_encoder, under its attribute names."""

    def __init__(self, V, d, period, n_subjects, audio_dim):
        super().__init__()
        self.audio_feature_map = nn.Linear(audio_dim, d)
        self.vertice_map = nn.Linear(3 * V, d)
        self.PPE = PeriodicPositionalEncoding(d, period=period)
        self.biased_mask = init_biased_mask(n_head=4, max_seq_len=600, period=period)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=4, dim_feedforward=2 * d, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=1)
        self.vertice_map_r = nn.Linear(d, 3 * V)
        self.obj_vector = nn.Linear(n_subjects, d, bias=False)


def linear_interpolation(features, input_fps, output_fps, output_len=None):
    features = features.transpose(1, 2)
    seq_len = features.shape[2] / float(input_fps)
    if output_len is None:
        output_len = int(seq_len * output_fps)
    out = F.interpolate(features, size=output_len, align_corners=True, mode="linear")
    return out.transpose(1, 2)


def faceformer_predict(encoder, dec, audio, template, one_hot):
    """FaceFormer.predict(audio, template, one_hot) for dataset "vocaset", float64."""
    enc, dec = encoder.double(), dec.double()
    dec.biased_mask = dec.biased_mask.double()
    with torch.no_grad():
        x = tw.normalise(audio)                                   # Wav2Vec2Processor
        feats, _ = enc.feature_extractor(x, None)                 # (1, T50, C)
        feats = linear_interpolation(feats, 50, 30)               # frame_num=None in predict()
        hidden = enc.encoder.transformer(enc.encoder.feature_projection(feats), None)
        template = template.reshape(1, 1, -1).double()
        obj_embedding = dec.obj_vector(one_hot.double())
        frame_num = hidden.shape[1]
        hidden = dec.audio_feature_map(hidden)
        for i in range(frame_num):
            if i == 0:
                vertice_emb = obj_embedding.unsqueeze(1)
                style_emb = vertice_emb
                vertice_input = dec.PPE(style_emb)
            else:
                vertice_input = dec.PPE(vertice_emb)
            tgt_mask = dec.biased_mask[:, :vertice_input.shape[1], :vertice_input.shape[1]]
            memory_mask = enc_dec_mask(vertice_input.shape[1], hidden.shape[1])
            vertice_out = dec.transformer_decoder(vertice_input, hidden, tgt_mask=tgt_mask, memory_mask=memory_mask)
            vertice_out = dec.vertice_map_r(vertice_out)
            new_output = dec.vertice_map(vertice_out[:, -1, :]).unsqueeze(1) + style_emb
            vertice_emb = torch.cat((vertice_emb, new_output), 1)
        out = vertice_out + template
    encoder.float()
    dec.float()
    return out[0].numpy().reshape(frame_num, -1, 3)


def make_faceformer(seed=0):
    """(torchaudio encoder, FaceFormer decoder, FaceFormer state dict as torch.save would write it)."""
    encoder, ta = tw.torchaudio_model(tw.TINY, seed=seed)
    torch.manual_seed(seed + 100)
    dec = FaceFormerDecoder(V, D, PERIOD, N_SUBJECTS, tw.TINY["hidden_size"]).eval()
    g = torch.Generator().manual_seed(seed + 101)
    with torch.no_grad():
        for name, p in sorted(dec.named_parameters()):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith("vertice_map_r"):  # FaceFormer zero-initialises it; trained it is not
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
            elif name.startswith("vertice_map."):
                p.copy_(torch.randn(p.shape, generator=g) * (30.0 / math.sqrt(p.shape[-1])))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    sd = {"audio_encoder." + k[len("wav2vec2."):]: v for k, v in tw.to_hf(ta).items()}
    sd["audio_encoder.masked_spec_embed"] = torch.rand(tw.TINY["hidden_size"], generator=g)
    sd.update(dec.state_dict())
    return encoder, dec, sd


def make_templates(seed=7):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((V, 3)) * 0.1
    return {s: base + 0.005 * rng.standard_normal((V, 3)) for s in list(SUBJECTS) + OTHER_SUBJECTS}


def one_hot(i):
    h = torch.zeros(1, N_SUBJECTS)
    h[0, i] = 1.0
    return h


def quiet(*_a, **_k):
    pass


class ConvertFaceFormerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (CLI and os.path.exists(CLI)):
            raise unittest.SkipTest("pass the blendfuse_cli path as the first argument")
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.encoder, cls.dec, cls.sd = make_faceformer()
        cls.pth = os.path.join(d, "vocaset_tiny.pth")
        torch.save(cls.sd, cls.pth)
        cls.templates = make_templates()
        cls.pkl = os.path.join(d, "templates.pkl")
        with open(cls.pkl, "wb") as f:
            pickle.dump(cls.templates, f, protocol=2)
        cls.cfg = os.path.join(d, "config.json")
        tw.write_json(cls.cfg, tw.hf_config())
        # 21560 samples: FaceFormer's predict() makes int(67 / 50 * 30) = 40 frames from the 67 conv
        # frames, blendfuse round(21560 * 30 / 16000) = 40 too.
        cls.audio = tw.test_audio(21560, seed=5)
        cls.wav = os.path.join(d, "x.wav")
        tw.write_wav(cls.wav, cls.audio.numpy())
        cls.out = os.path.join(d, "faceformer.safetensors")
        r = subprocess.run([PY, os.path.join(SCRIPTS, "convert_faceformer.py"), cls.pth, "-o", cls.out,
                            "--templates", cls.pkl, "--wav2vec2-config", cls.cfg], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("convert_faceformer.py failed: " + r.stdout + r.stderr)
        cls.convert_stdout = r.stdout

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp.name)

    def path(self, name):
        return os.path.join(self.dir, name)

    def speak(self, model, *args):
        out = self.path("o.npy")
        r = subprocess.run([CLI, "speak", "--model", model, "--wav", self.wav, "--out", out] + list(args),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("blendfuse speak failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
        return np.load(out)

    def reference(self, subject, template_subject=None, scale=1.0):
        tmpl = torch.from_numpy(self.templates[template_subject or SUBJECTS[subject]])
        return scale * faceformer_predict(self.encoder, self.dec, self.audio, tmpl, one_hot(subject))

    def convert_error(self, src, **kw):
        with self.assertRaises(cf.ConvertError) as cm:
            cf.convert(src, self.path("o.safetensors"), log=quiet, warn=quiet, **kw)
        self.assertFalse(os.path.exists(self.path("o.safetensors")))
        return str(cm.exception)

    def save_variant(self, **changes):
        sd = dict(self.sd)
        for k, v in changes.items():
            if v is None:
                del sd[k]
            else:
                sd[k] = v
        p = self.path("variant.pth")
        torch.save(sd, p)
        return p

    # -- the converted model reproduces FaceFormer -------------------------------------------------------

    def test_file_contents(self):
        tensors, _, meta = tw.cw.read_safetensors(self.out)
        cfg = json.loads(meta["config"])
        self.assertEqual(cfg["model_type"], "blendfuse_audio")
        self.assertEqual(cfg["subjects"], list(SUBJECTS))
        self.assertEqual(cfg["fps"], 30.0)
        ff = cfg["faceformer"]
        self.assertEqual((ff["vertices"], ff["feature_dim"], ff["num_heads"], ff["dim_feedforward"], ff["period"],
                          ff["n_subjects"], ff["audio_dim"]), (V, D, 4, 2 * D, PERIOD, N_SUBJECTS, 32))
        self.assertEqual(json.loads(meta["faceformer_config"]), ff)
        self.assertEqual(json.loads(meta["wav2vec2_config"]), cfg["wav2vec2"])
        self.assertEqual(sorted(n[10:] for n in tensors if n.startswith("templates.")),
                         sorted(self.templates))
        self.assertNotIn("PPE.pe", tensors)
        self.assertNotIn("audio_encoder.masked_spec_embed", tensors)
        self.assertIn("audio_encoder.encoder.pos_conv_embed.conv.weight_g", tensors)
        for dropped in ("PPE.pe", "audio_encoder.masked_spec_embed"):
            self.assertIn(dropped, self.convert_stdout)

    def test_speak_matches_faceformer_predict(self):
        ref = self.reference(3)
        self.assertEqual(ref.shape, (40, V, 3))
        got = self.speak(self.out, "--subject", SUBJECTS[3])
        tw.assert_close(self, got, ref, rel=1e-4, what="speak vs FaceFormer predict (subject 3)")
        # The deformation itself (output - template), relative to its own size.
        tmpl = self.templates[SUBJECTS[3]]
        self.assertGreater(np.abs(ref - tmpl).max(), 1e-2)
        tw.assert_close(self, got - tmpl, ref - tmpl, rel=1e-4, floor=0.0, what="deformation vs FaceFormer")

        # Default style = the first training subject, animated on its own template.
        tw.assert_close(self, self.speak(self.out), self.reference(0), what="speak default subject")

        # Another subject's template (a VOCASET validation speaker from templates.pkl).
        got = self.speak(self.out, "--subject", SUBJECTS[3], "--template", OTHER_SUBJECTS[0])
        tw.assert_close(self, got, self.reference(3, OTHER_SUBJECTS[0]), what="speak --template")

    def test_scale_and_template_files(self):
        """--scale 1000 (metres -> millimetres); templates from .npy / .obj files and SUBJECT=FILE."""
        tdir = self.path("tmpl")
        os.makedirs(tdir)
        for s in SUBJECTS[:4]:
            np.save(os.path.join(tdir, s + ".npy"), self.templates[s].astype(np.float32))
        obj = self.path("face.obj")
        with open(obj, "w") as f:
            f.write("# test\n")
            for v in self.templates[SUBJECTS[5]]:
                f.write("v %.17g %.17g %.17g\n" % tuple(v))
            f.write("f 1 2 3\n")
        out = self.path("mm.safetensors")
        warnings = []
        cf.convert(self.pth, out, templates=[tdir, SUBJECTS[5] + "=" + obj], wav2vec2_config=self.cfg,
                   scale=1000.0, log=quiet, warn=warnings.append)
        self.assertTrue(any("no template for training subjects" in w for w in warnings), warnings)
        got = self.speak(out, "--subject", SUBJECTS[5])
        tw.assert_close(self, got, self.reference(5, scale=1000.0), what="speak --scale 1000, .obj template")

    def test_encoder_alone_with_convert_wav2vec2(self):
        """convert_wav2vec2.py finds the 'audio_encoder.' prefix of a FaceFormer checkpoint."""
        out = self.path("enc.safetensors")
        lines = []
        tw.cw.convert(self.pth, out, config=self.cfg, log=lines.append)
        self.assertIn("under 'audio_encoder.'", lines[0])
        self.assertIn("  vertice_map.weight  (not part of the wav2vec2 encoder)", lines)
        f = self.path("f.npy")
        r = subprocess.run([CLI, "features", "--model", out, "--wav", self.wav, "--out", f],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        tw.assert_close(self, np.load(f), tw.reference_hidden(self.encoder, self.audio), what="features")

    # -- errors ------------------------------------------------------------------------------------------

    def test_errors(self):
        bad = self.save_variant(**{"vertice_map_r.weight": torch.zeros(3 * V + 3, D)})
        r = subprocess.run([PY, os.path.join(SCRIPTS, "convert_faceformer.py"), bad, "-o", self.path("o.safetensors"),
                            "--wav2vec2-config", self.cfg], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertIn(bad + ":", r.stderr)
        self.assertIn("vertice_map_r.weight", r.stderr)
        self.assertIn("(24, 16)", r.stderr)

        err = self.convert_error(self.save_variant(**{"transformer_decoder.layers.0.norm2.bias": None}),
                                 wav2vec2_config=self.cfg)
        self.assertIn("missing tensor 'transformer_decoder.layers.0.norm2.bias'", err)

        err = self.convert_error(self.save_variant(**{"audio_encoder.encoder.layers.1.layer_norm.weight": None}),
                                 wav2vec2_config=self.cfg)
        self.assertIn("missing tensor 'encoder.layers.1.layer_norm.weight'", err)

        err = self.convert_error(self.save_variant(**{"transformer_decoder.layers.1.linear1.weight":
                                                      torch.zeros(2 * D, D)}), wav2vec2_config=self.cfg)
        self.assertIn("unexpected tensor 'transformer_decoder.layers.1.linear1.weight'", err)

        # Templates of another mesh.
        wrong = self.path("wrong.npy")
        np.save(wrong, np.zeros((V + 1, 3)))
        err = self.convert_error(self.pth, templates=[SUBJECTS[0] + "=" + wrong], wav2vec2_config=self.cfg)
        self.assertIn(wrong, err)
        self.assertIn("%d vertices, the model %d" % (V + 1, V), err)

        # Subject list of the wrong length; --period contradicting PPE.pe.
        err = self.convert_error(self.pth, subjects=["A", "B"], wav2vec2_config=self.cfg)
        self.assertIn("8 training subjects, --subjects names 2", err)
        err = self.convert_error(self.pth, period=30, wav2vec2_config=self.cfg)
        self.assertIn("contradicts the PPE.pe buffer (period 25)", err)

        # Without --wav2vec2-config the tiny encoder's heads cannot be inferred.
        err = self.convert_error(self.pth)
        self.assertIn(self.pth, err)
        self.assertIn("--wav2vec2-config", err)

        # Truncated checkpoint.
        with open(self.pth, "rb") as f:
            data = f.read()
        trunc = self.path("trunc.pth")
        with open(trunc, "wb") as f:
            f.write(data[:len(data) * 2 // 3])
        err = self.convert_error(trunc, wav2vec2_config=self.cfg)
        self.assertIn(trunc + ":", err)

        # Missing wav2vec2 config file.
        err = self.convert_error(self.pth, wav2vec2_config=self.path("nope.json"))
        self.assertIn(self.path("nope.json"), err)

    def test_period_inference(self):
        for p in (1, 7, 25, 30, 601):
            pe = PeriodicPositionalEncoding(D, period=p).pe.numpy()
            self.assertEqual(cf.infer_period(pe, "x"), p)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        CLI = os.path.abspath(sys.argv.pop(1))
    torch.set_num_threads(1)
    unittest.main()
