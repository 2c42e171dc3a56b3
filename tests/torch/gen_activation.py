"""PyTorch reference vectors for include/blendfuse/ops/activation.hpp -> activation.safetensors.

Cases <op><i>.<tensor> with op in relu/gelu/gelut (tanh approximation)/softmax: float64 x, dy
(= R, the random projection of L = sum(y * R)), y and dx. Dropout has no vectors (its mask comes
from blendfuse::Rng, not torch's generator); it is tested statistically in test_activation.cpp.
"""
import os

import torch
import torch.nn.functional as F

import stio


def _case(out, name, x, fn):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    R = torch.randn(y.shape, dtype=torch.float64)
    (dx,) = torch.autograd.grad((y * R).sum(), [x])
    out[name + ".x"] = x.detach()
    out[name + ".dy"] = R
    out[name + ".y"] = y.detach()
    out[name + ".dx"] = dx


def generate(outdir):
    out = {}
    rn = lambda *s: torch.randn(s, dtype=torch.float64)
    _case(out, "relu0", rn(4, 5, 6), F.relu)
    _case(out, "relu1", 3.0 * rn(2, 3, 4, 5), F.relu)
    _case(out, "gelu0", 3.0 * rn(4, 50), lambda x: F.gelu(x))
    _case(out, "gelu1", rn(2, 3, 8), lambda x: F.gelu(x))
    _case(out, "gelut0", 3.0 * rn(4, 50), lambda x: F.gelu(x, approximate="tanh"))
    _case(out, "gelut1", rn(2, 3, 8), lambda x: F.gelu(x, approximate="tanh"))
    _case(out, "softmax0", rn(3, 4, 7), lambda x: F.softmax(x, dim=-1))
    _case(out, "softmax1", 20.0 * rn(5, 10) + 100.0, lambda x: F.softmax(x, dim=-1))
    _case(out, "softmax2", rn(6, 1), lambda x: F.softmax(x, dim=-1))
    stio.save(os.path.join(outdir, "activation.safetensors"), out)
