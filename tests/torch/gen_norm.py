"""PyTorch reference vectors for include/blendfuse/ops/norm.hpp -> norm.safetensors.

Cases are named <op><i>.<tensor> (op in in/gn/ln). Each holds float64 x, dy (= R, the random
projection of the loss L = sum(y * R)), y, the saved statistics mean/rstd (torch.native_group_norm /
native_layer_norm), dx and, for affine cases, gamma, beta, dgamma, dbeta. Parameters are in the
metadata: <case>.eps, <case>.groups (gn), <case>.affine ("1"/"0").
"""
import os

import torch
import torch.nn.functional as F

import stio


def _case(out, meta, name, x, affine, eps, fwd, stats, extra=None):
    C = x.shape[-1] if name.startswith("ln") else x.shape[1]
    x = x.clone().requires_grad_(True)
    params = []
    gamma = beta = None
    if affine:
        gamma = (1.0 + 0.5 * torch.randn(C, dtype=torch.float64)).requires_grad_(True)
        beta = (0.5 * torch.randn(C, dtype=torch.float64)).requires_grad_(True)
        params = [gamma, beta]
    y = fwd(x, gamma, beta)
    R = torch.randn(y.shape, dtype=torch.float64)
    grads = torch.autograd.grad((y * R).sum(), [x] + params)
    mean, rstd = stats(x.detach())
    out[name + ".x"] = x.detach()
    out[name + ".dy"] = R
    out[name + ".y"] = y.detach()
    out[name + ".mean"] = mean
    out[name + ".rstd"] = rstd
    out[name + ".dx"] = grads[0]
    if affine:
        out[name + ".gamma"] = gamma.detach()
        out[name + ".beta"] = beta.detach()
        out[name + ".dgamma"] = grads[1]
        out[name + ".dbeta"] = grads[2]
    meta[name + ".eps"] = repr(eps)
    meta[name + ".affine"] = "1" if affine else "0"
    for k, v in (extra or {}).items():
        meta[name + "." + k] = str(v)


def _gn_stats(x, groups, eps):
    N, C = x.shape[0], x.shape[1]
    hw = x[0, 0].numel()
    _, mean, rstd = torch.native_group_norm(x, None, None, N, C, hw, groups, eps)
    return mean, rstd


def generate(outdir):
    out, meta = {}, {}
    # instance norm: (N, C, H, W) affine, (N, C, L) without affine, eps variant
    for i, (shape, affine, eps) in enumerate([((2, 3, 4, 5), True, 1e-5),
                                              ((2, 4, 7), False, 1e-5),
                                              ((1, 3, 6), True, 1e-3)]):
        x = torch.randn(shape, dtype=torch.float64)
        C = shape[1]
        _case(out, meta, f"in{i}", x, affine, eps,
              lambda x, g, b, eps=eps: F.instance_norm(x, weight=g, bias=b, eps=eps),
              lambda x, eps=eps, C=C: _gn_stats(x, C, eps))
    # group norm: general groups, groups == C (wav2vec 2.0 GroupNorm(512, 512)), groups == 1
    for i, (shape, groups, affine, eps) in enumerate([((2, 6, 5), 3, True, 1e-5),
                                                      ((2, 4, 3, 3), 2, True, 1e-5),
                                                      ((2, 8, 16), 8, True, 1e-5),
                                                      ((3, 4, 5), 1, False, 1e-4)]):
        x = torch.randn(shape, dtype=torch.float64)
        _case(out, meta, f"gn{i}", x, affine, eps,
              lambda x, g, b, groups=groups, eps=eps: F.group_norm(x, groups, g, b, eps),
              lambda x, groups=groups, eps=eps: _gn_stats(x, groups, eps),
              {"groups": groups})
    # layer norm over the last dim
    for i, (shape, affine, eps) in enumerate([((3, 4, 10), True, 1e-5),
                                              ((5, 16), True, 1e-5),
                                              ((2, 3, 7), False, 1e-6)]):
        x = 2.0 * torch.randn(shape, dtype=torch.float64) + 0.5
        D = shape[-1]
        def stats(x, D=D, eps=eps):
            _, mean, rstd = torch.native_layer_norm(x, [D], None, None, eps)
            return mean.squeeze(-1), rstd.squeeze(-1)
        _case(out, meta, f"ln{i}", x, affine, eps,
              lambda x, g, b, D=D, eps=eps: F.layer_norm(x, [D], g, b, eps), stats)
    stio.save(os.path.join(outdir, "norm.safetensors"), out, meta)
