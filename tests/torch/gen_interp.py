"""PyTorch reference vectors for include/blendfuse/ops/interp.hpp -> interp.safetensors.

F.interpolate(x, size=T_out, mode='linear', align_corners=True) on x (N, C, T_in). Cases <c>:
  <c>.x (N, C, T_in) float64 (torch.randn after the driver's fixed seed), <c>.r random projection
  R of L = sum(y * R), <c>.y (N, C, T_out), <c>.dx.
Cases <c>_f32 repeat some of them with x in float32 (PyTorch's float ratio arithmetic).
"""
import os

import torch
import torch.nn.functional as F

import stio

CASES = [
    ("down50to30", (2, 3, 10), 6),
    ("up", (1, 2, 5), 12),
    ("odd", (2, 2, 7), 4),
    ("tin1", (2, 3, 1), 4),
    ("tout1", (1, 3, 7), 1),
    ("same", (1, 2, 5), 5),
    ("long", (1, 2, 50), 30),
]


def _case(out, name, x, t_out):
    x = x.clone().requires_grad_(True)
    y = F.interpolate(x, size=t_out, mode="linear", align_corners=True)
    R = torch.randn(y.shape, dtype=torch.float64).to(x.dtype)
    (dx,) = torch.autograd.grad((y * R).sum(), [x])
    out[name + ".x"], out[name + ".r"] = x.detach(), R
    out[name + ".y"], out[name + ".dx"] = y.detach(), dx


def generate(outdir):
    out = {}
    for name, shape, t_out in CASES:
        _case(out, name, torch.randn(shape, dtype=torch.float64), t_out)
    for name, shape, t_out in CASES[:3] + CASES[-1:]:
        _case(out, name + "_f32", torch.randn(shape, dtype=torch.float64).float(), t_out)
    stio.save(os.path.join(outdir, "interp.safetensors"), out)
