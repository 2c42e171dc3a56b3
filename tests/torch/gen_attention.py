"""PyTorch reference vectors for include/blendfuse/ops/attention.hpp -> attention.safetensors.

Multi-head attention cases <c> use nn.MultiheadAttention(E, H, batch_first=True) in float64, eval
mode, with weights overwritten by scaled torch.randn (after the driver's fixed seed):
  <c>.query (N, L, E), <c>.key (N, S, E), <c>.value (N, S, E)
  <c>.in_w (3E, E), <c>.in_b (3E,), <c>.out_w (E, E), <c>.out_b (E,)   in_proj / out_proj
  [<c>.mask]  additive float mask, (L, S) or (N*H, L, S), -inf = masked
  <c>.r       random projection R of the loss L = sum(y * R)
  <c>.y (N, L, E), <c>.probs (N, H, L, S) (per-head attention weights)
  <c>.dquery, <c>.dkey, <c>.dvalue, <c>.din_w, <c>.din_b, <c>.dout_w, <c>.dout_b
The "self" case calls mha(x, x, x): it stores only <c>.query and <c>.dquery (the summed gradient).
The "sdpa" case is plain softmax(q k^T / sqrt(D) + mask) v on q (N, H, L, D), k (N, H, S, D),
v (N, H, S, Dv): <c>.q, <c>.k, <c>.v, <c>.mask, <c>.r, <c>.y, <c>.probs, <c>.dq, <c>.dk, <c>.dv.
Metadata "cases" (JSON): {name: {"heads": H, "mask": "none"|"ls"|"nhls", "self": bool}}.
"""
import math
import os

import torch
import torch.nn as nn

import stio

INF = float("inf")


def _rn(*s):
    return torch.randn(s, dtype=torch.float64)


def causal_mask(L):
    return torch.triu(torch.full((L, L), -INF, dtype=torch.float64), diagonal=1)


def biased_causal_mask(H, L, period=2):
    """FaceFormer-style: per-head linear bias on the (quantised) distance, -inf above the diagonal."""
    i = torch.arange(L).unsqueeze(1)
    j = torch.arange(L).unsqueeze(0)
    slopes = torch.tensor([2.0 ** (-(h + 1)) for h in range(H)], dtype=torch.float64)
    dist = ((i - j).clamp(min=0) // period).to(torch.float64)
    m = -slopes.view(H, 1, 1) * dist.unsqueeze(0)
    return m + causal_mask(L).unsqueeze(0)


def alignment_mask(L, S):
    """FaceFormer's BIWI encoder-decoder mask: query i sees keys 2i and 2i+1."""
    m = torch.full((L, S), -INF, dtype=torch.float64)
    for i in range(L):
        m[i, 2 * i:2 * i + 2] = 0.0
    return m


def _mha(out, meta, name, N, L, S, E, H, mask=None, mask_kind="none", self_attn=False):
    mha = nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(0.4 * _rn(3 * E, E))
        mha.in_proj_bias.copy_(0.2 * _rn(3 * E))
        mha.out_proj.weight.copy_(0.4 * _rn(E, E))
        mha.out_proj.bias.copy_(0.2 * _rn(E))
    q = _rn(N, L, E).requires_grad_(True)
    if self_attn:
        k = v = q
    else:
        k = _rn(N, S, E).requires_grad_(True)
        v = _rn(N, S, E).requires_grad_(True)
    y, probs = mha(q, k, v, attn_mask=mask, need_weights=True, average_attn_weights=False)
    R = _rn(*y.shape)
    params = [mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias]
    ins = [q] if self_attn else [q, k, v]
    grads = torch.autograd.grad((y * R).sum(), ins + params)
    out[name + ".query"] = q.detach()
    out[name + ".dquery"] = grads[0]
    if not self_attn:
        out[name + ".key"], out[name + ".value"] = k.detach(), v.detach()
        out[name + ".dkey"], out[name + ".dvalue"] = grads[1], grads[2]
    for key, p, g in zip(["in_w", "in_b", "out_w", "out_b"], params, grads[len(ins):]):
        out[name + "." + key] = p.detach().clone()
        out[name + ".d" + key] = g
    if mask is not None:
        out[name + ".mask"] = mask
    out[name + ".r"], out[name + ".y"], out[name + ".probs"] = R, y.detach(), probs.detach()
    meta[name] = {"heads": H, "mask": mask_kind, "self": self_attn}


def _sdpa(out, meta, name, N, H, L, S, D, Dv):
    q = _rn(N, H, L, D).requires_grad_(True)
    k = _rn(N, H, S, D).requires_grad_(True)
    v = _rn(N, H, S, Dv).requires_grad_(True)
    mask = 0.5 * _rn(L, S)
    mask[0, 1] = -INF
    mask[L - 1, 0] = -INF
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + mask
    probs = torch.softmax(scores, dim=-1)
    y = probs @ v
    R = _rn(*y.shape)
    dq, dk, dv = torch.autograd.grad((y * R).sum(), [q, k, v])
    for key, t in [("q", q), ("k", k), ("v", v), ("mask", mask), ("r", R), ("y", y),
                   ("probs", probs), ("dq", dq), ("dk", dk), ("dv", dv)]:
        out[name + "." + key] = t.detach()
    meta[name] = {"heads": H, "mask": "ls", "self": False}


def generate(outdir):
    out, meta = {}, {}
    _mha(out, meta, "cross", 2, 3, 5, 8, 2)
    _mha(out, meta, "causal", 2, 4, 4, 8, 4, causal_mask(4), "ls")
    N, H, L = 2, 3, 5
    _mha(out, meta, "biased", N, L, L, 6, H, biased_causal_mask(H, L).repeat(N, 1, 1), "nhls")
    _mha(out, meta, "align", 1, 3, 6, 8, 2, alignment_mask(3, 6), "ls")
    _mha(out, meta, "self", 1, 4, 4, 8, 2, causal_mask(4), "ls", self_attn=True)
    _sdpa(out, meta, "sdpa", 2, 2, 3, 5, 4, 3)
    stio.save(os.path.join(outdir, "attention.safetensors"), out, {"cases": meta})
