"""PyTorch reference vectors for ops/conv.hpp (conv2d and conv1d, forward and backward).

For every case <c> the file holds float64 tensors
  <c>.x, <c>.w, [<c>.b]   inputs (torch.randn after the driver's fixed seed)
  <c>.r                    random projection R; the loss is L = sum(y * R)
  <c>.y                    forward output
  <c>.dx, <c>.dw, [<c>.db] dL/dx, dL/dw, dL/db
and the metadata entry "cases" (JSON) maps each case name to its parameters:
  {"dim": 1|2, "stride": [...], "padding": [...], "dilation": [...], "groups": g, "bias": bool}
with one entry per spatial dimension in stride/padding/dilation.
"""
import os

import torch
import torch.nn.functional as F

import stio

# name: (dim, x shape, weight shape, stride, padding, dilation, groups, bias)
CASES = [
    ("c2d_basic", 2, (2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("c2d_stride_dil_groups", 2, (1, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 2), (2, 1), 2, True),
    ("c2d_depthwise_nobias", 2, (2, 4, 7, 7), (8, 1, 3, 3), (2, 2), (0, 0), (1, 1), 4, False),
    ("c2d_pointwise_groups", 2, (2, 6, 3, 5), (4, 3, 1, 1), (1, 1), (0, 0), (1, 1), 2, True),
    # wav2vec 2.0 feature extractor: layer 0 (1 -> C, kernel 10, stride 5, no bias) and a later
    # layer (kernel 3, stride 2), at small channel counts.
    ("c1d_w2v_fe0", 1, (2, 1, 103), (8, 1, 10), (5,), (0,), (1,), 1, False),
    ("c1d_w2v_fe1", 1, (2, 8, 19), (8, 8, 3), (2,), (0,), (1,), 1, False),
    # wav2vec 2.0 positional convolution: even kernel, padding kernel/2, grouped, with bias.
    ("c1d_w2v_pos", 1, (1, 32, 23), (32, 2, 12), (1,), (6,), (1,), 16, True),
    ("c1d_stride_dil", 1, (2, 4, 29), (6, 2, 3), (2,), (2,), (3,), 2, True),
]


def conv(dim, x, w, b, stride, padding, dilation, groups):
    f = F.conv2d if dim == 2 else F.conv1d
    return f(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)


def generate(outdir):
    tensors = {}
    meta = {}
    for name, dim, xs, ws, stride, padding, dilation, groups, bias in CASES:
        x = torch.randn(*xs, dtype=torch.float64, requires_grad=True)
        w = torch.randn(*ws, dtype=torch.float64, requires_grad=True)
        b = torch.randn(ws[0], dtype=torch.float64, requires_grad=True) if bias else None
        y = conv(dim, x, w, b, stride, padding, dilation, groups)
        r = torch.randn(*y.shape, dtype=torch.float64)
        (y * r).sum().backward()
        tensors.update({f"{name}.x": x, f"{name}.w": w, f"{name}.r": r, f"{name}.y": y,
                        f"{name}.dx": x.grad, f"{name}.dw": w.grad})
        if bias:
            tensors.update({f"{name}.b": b, f"{name}.db": b.grad})
        meta[name] = {"dim": dim, "stride": list(stride), "padding": list(padding),
                      "dilation": list(dilation), "groups": groups, "bias": bias}
    stio.save(os.path.join(outdir, "conv.safetensors"), tensors, metadata={"cases": meta})
