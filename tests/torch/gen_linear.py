"""PyTorch reference vectors for include/blendfuse/ops/linear.hpp -> linear.safetensors.

Linear cases <c> (torch.nn.functional.linear, W (out, in) as nn.Linear):
  <c>.x, <c>.w, [<c>.b]    inputs (float64, torch.randn after the driver's fixed seed)
  <c>.r                    random projection R; the loss is L = sum(y * R)
  <c>.y, <c>.dx, <c>.dw, [<c>.db]
Matmul cases <c> (torch.matmul with broadcast batch dims; A/B stored transposed when the case
metadata says so, i.e. C = op(A) @ op(B)):
  <c>.a, <c>.b, <c>.r, <c>.y, <c>.da, <c>.db
Metadata "cases" (JSON): {name: {"kind": "linear"|"matmul", "bias": bool, "trans_a": bool,
"trans_b": bool}}.
"""
import os

import torch
import torch.nn.functional as F

import stio


def _rn(*s):
    return torch.randn(s, dtype=torch.float64)


def _linear(out, meta, name, xs, out_f, bias):
    x = _rn(*xs).requires_grad_(True)
    w = _rn(out_f, xs[-1]).requires_grad_(True)
    b = _rn(out_f).requires_grad_(True) if bias else None
    y = F.linear(x, w, b)
    R = _rn(*y.shape)
    ins = [x, w] + ([b] if bias else [])
    grads = torch.autograd.grad((y * R).sum(), ins)
    out[name + ".x"], out[name + ".w"] = x.detach(), w.detach()
    out[name + ".r"], out[name + ".y"] = R, y.detach()
    out[name + ".dx"], out[name + ".dw"] = grads[0], grads[1]
    if bias:
        out[name + ".b"], out[name + ".db"] = b.detach(), grads[2]
    meta[name] = {"kind": "linear", "bias": bias, "trans_a": False, "trans_b": False}


def _matmul(out, meta, name, a_shape, b_shape, ta, tb):
    a = _rn(*a_shape).requires_grad_(True)
    b = _rn(*b_shape).requires_grad_(True)
    opa = a.transpose(-1, -2) if ta else a
    opb = b.transpose(-1, -2) if tb else b
    y = torch.matmul(opa, opb)
    R = _rn(*y.shape)
    da, db = torch.autograd.grad((y * R).sum(), [a, b])
    out[name + ".a"], out[name + ".b"] = a.detach(), b.detach()
    out[name + ".r"], out[name + ".y"] = R, y.detach()
    out[name + ".da"], out[name + ".db"] = da, db
    meta[name] = {"kind": "matmul", "bias": False, "trans_a": ta, "trans_b": tb}


def generate(outdir):
    out, meta = {}, {}
    _linear(out, meta, "lin3d", (2, 3, 5), 4, True)
    _linear(out, meta, "lin2d_nobias", (6, 7), 3, False)
    _linear(out, meta, "lin1d", (5,), 2, True)
    _matmul(out, meta, "mm2d", (3, 4), (4, 5), False, False)
    _matmul(out, meta, "bmm", (2, 3, 4, 5), (2, 3, 5, 2), False, False)
    _matmul(out, meta, "bmm_bcast", (2, 1, 3, 4), (3, 4, 5), False, False)
    _matmul(out, meta, "bmm_ta", (2, 4, 3), (2, 4, 5), True, False)
    _matmul(out, meta, "bmm_tb", (2, 3, 4), (5, 4), False, True)
    _matmul(out, meta, "bmm_tab", (3, 2, 4, 3), (2, 5, 4), True, True)
    stio.save(os.path.join(outdir, "linear.safetensors"), out, {"cases": meta})
