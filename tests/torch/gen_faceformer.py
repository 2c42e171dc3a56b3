"""PyTorch reference vectors for include/blendfuse/nn/faceformer.hpp -> faceformer.safetensors.

A small reimplementation of FaceFormer's decoder (Fan et al., CVPR 2022; EvelynFan/FaceFormer
faceformer.py, "vocaset" alignment) in float64, eval mode, built from torch.nn.Linear and
torch.nn.TransformerDecoderLayer / TransformerDecoder(num_layers=1), with FaceFormer's
init_biased_mask (ALiBi slopes, period-quantised distance), enc_dec_mask and
PeriodicPositionalEncoding rewritten here without the 600-frame cap. Weights are random (after the
driver's fixed seed; vertice_map_r is NOT zero so the outputs depend on everything).

Per case <c> (metadata "cases" lists them with their config, JSON):
  <c>.<param>      every parameter under its FaceFormer state_dict name
  <c>.audio (B, T, A)   resampled audio hidden states (input of audio_feature_map)
  <c>.vertices (B, T, V*3)  ground-truth deformations (vertices - template) for teacher forcing
  <c>.style (B, n_subjects) one-hot speaker codes
  <c>.tf (B, T, V*3)    teacher-forcing output: frame 0 input = style embedding + PPE(0),
                        frame t input = vertice_map(vertices[t-1]) + style + PPE(t)
  <c>.tf_orig           the same with FaceFormer's training-code frame 0 (vertice_map(0) + style)
  <c>.ar (B, T, V*3)    autoregressive output, FaceFormer's predict() loop (recomputes the whole
                        decoder every frame), one batch entry at a time
  <c>.r                 random projection R; gradients of L = sum(tf * R):
  <c>.grad.<param>, <c>.grad.audio, <c>.grad.vertices, <c>.grad.style
"""
import json
import math

import torch
import torch.nn as nn

import stio

DT = torch.float64


def get_slopes(n):
    def pow2(m):
        start = 2 ** (-2 ** -(math.log2(m) - 3))
        return [start * start ** i for i in range(m)]
    if math.log2(n).is_integer():
        return pow2(n)
    closest = 2 ** math.floor(math.log2(n))
    return pow2(closest) + get_slopes(2 * closest)[0::2][:n - closest]


def init_biased_mask(n_head, max_seq_len, period):
    """FaceFormer's temporal bias (H, T, T), in float64."""
    slopes = torch.tensor(get_slopes(n_head), dtype=DT)
    bias = torch.arange(start=0, end=max_seq_len, step=period).unsqueeze(1).repeat(1, period).view(-1) // period
    bias = -torch.flip(bias, dims=[0]).to(DT)
    alibi = torch.zeros(max_seq_len, max_seq_len, dtype=DT)
    for i in range(max_seq_len):
        alibi[i, :i + 1] = bias[-(i + 1):]
    alibi = slopes.unsqueeze(1).unsqueeze(1) * alibi.unsqueeze(0)
    mask = (torch.triu(torch.ones(max_seq_len, max_seq_len)) == 1).transpose(0, 1)
    mask = mask.to(DT).masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, 0.0)
    return mask.unsqueeze(0) + alibi


def enc_dec_mask(T, S):
    """FaceFormer's vocaset alignment: True (masked) everywhere except (i, i)."""
    mask = torch.ones(T, S)
    for i in range(T):
        mask[i, i] = 0
    return mask == 1


def ppe(d, period, T):
    pe = torch.zeros(period, d, dtype=DT)
    position = torch.arange(0, period, dtype=DT).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d, 2, dtype=DT) * (-math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.repeat(T // period + 1, 1)[:T]


class FaceFormerDecoder(nn.Module):
    def __init__(self, V, d, H, n_subjects, period, audio_dim):
        super().__init__()
        self.H, self.d, self.period = H, d, period
        self.audio_feature_map = nn.Linear(audio_dim, d)
        self.vertice_map = nn.Linear(3 * V, d)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=H, dim_feedforward=2 * d, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=1)
        self.vertice_map_r = nn.Linear(d, 3 * V)
        self.obj_vector = nn.Linear(n_subjects, d, bias=False)

    def decode(self, x, memory):
        B, T = x.shape[0], x.shape[1]
        tgt_mask = init_biased_mask(self.H, T, self.period).repeat(B, 1, 1)  # (B*H, T, T)
        memory_mask = enc_dec_mask(T, memory.shape[1])
        y = self.transformer_decoder(x + ppe(self.d, self.period, T), memory,
                                     tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.vertice_map_r(y)

    def teacher_forcing(self, audio, vertices, one_hot, orig_first_frame=False):
        style = self.obj_vector(one_hot).unsqueeze(1)
        memory = self.audio_feature_map(audio)
        prev = self.vertice_map(vertices[:, :-1])
        first = self.vertice_map(torch.zeros_like(vertices[:, :1])) if orig_first_frame \
            else torch.zeros_like(prev[:, :1])
        return self.decode(torch.cat([first, prev], 1) + style, memory)

    def predict(self, audio, one_hot):
        """FaceFormer's predict() loop (batch 1), without the template."""
        memory = self.audio_feature_map(audio)
        style_emb = self.obj_vector(one_hot).unsqueeze(1)
        vertice_emb = style_emb
        for _ in range(audio.shape[1]):
            out = self.decode(vertice_emb, memory)
            new = self.vertice_map(out[:, -1, :]).unsqueeze(1) + style_emb
            vertice_emb = torch.cat((vertice_emb, new), 1)
        return out


def _case(out, meta, name, B, T, V, d, H, n_subjects, period, audio_dim):
    m = FaceFormerDecoder(V, d, H, n_subjects, period, audio_dim).to(DT).eval()
    with torch.no_grad():
        for pname, p in sorted(m.named_parameters()):
            if "norm" in pname and pname.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, dtype=DT))
            elif "norm" in pname:
                p.copy_(0.2 * torch.randn(p.shape, dtype=DT))
            else:
                p.copy_(torch.randn(p.shape, dtype=DT) / math.sqrt(p.shape[-1]))
    audio = torch.randn(B, T, audio_dim, dtype=DT).requires_grad_(True)
    vertices = (0.5 * torch.randn(B, T, 3 * V, dtype=DT)).requires_grad_(True)
    style = torch.zeros(B, n_subjects, dtype=DT)
    for b in range(B):
        style[b, (b + 1) % n_subjects] = 1.0
    style.requires_grad_(True)

    tf = m.teacher_forcing(audio, vertices, style)
    R = torch.randn(tf.shape, dtype=DT)
    params = sorted(m.named_parameters())
    grads = torch.autograd.grad((tf * R).sum(), [audio, vertices, style] + [p for _, p in params])
    with torch.no_grad():
        tf_orig = m.teacher_forcing(audio, vertices, style, orig_first_frame=True)
        ar = torch.cat([m.predict(audio[b:b + 1], style[b:b + 1]) for b in range(B)], 0)

    for pname, p in params:
        out[f"{name}.{pname}"] = p.detach().clone()
    for key, g in zip(["audio", "vertices", "style"] + [n for n, _ in params], grads):
        out[f"{name}.grad.{key}"] = g
    out[f"{name}.audio"] = audio.detach()
    out[f"{name}.vertices"] = vertices.detach()
    out[f"{name}.style"] = style.detach()
    out[f"{name}.tf"] = tf.detach()
    out[f"{name}.tf_orig"] = tf_orig
    out[f"{name}.ar"] = ar
    out[f"{name}.r"] = R
    meta[name] = {"vertices": V, "feature_dim": d, "num_heads": H, "dim_feedforward": 2 * d,
                  "period": period, "n_subjects": n_subjects, "audio_dim": audio_dim}


def generate(outdir):
    out, meta = {}, {}
    # FaceFormer's period 30 with T < period.
    _case(out, meta, "short", B=2, T=12, V=10, d=16, H=4, n_subjects=3, period=30, audio_dim=24)
    # T > period: the floor((i - j) / period) bias takes several values.
    _case(out, meta, "long", B=1, T=40, V=5, d=16, H=4, n_subjects=3, period=8, audio_dim=16)
    stio.save(f"{outdir}/faceformer.safetensors", out, metadata={"cases": meta})
