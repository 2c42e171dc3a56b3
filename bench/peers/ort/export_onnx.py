#!/usr/bin/python3
"""blendfuse benchmarks — the ONNX Runtime peer's models, exported from PyTorch.

The same models as bench/peers/bench_torch.cpp (identical shapes, ops and FLOPs), written in
PyTorch Python and exported to ONNX (opset 17) with fixed shapes, one file per benchmark case:

  fusion_b1.onnx, fusion_b32.onnx   the deformation fusion module at the paper's scale: mesh → map
        gather (3 vertices per pixel, barycentric weights, a disk of valid pixels + mask channel;
        random triangles as in the LibTorch peer), two encoders of 6 × (conv 3×3 s2 → instance norm
        (affine) → ReLU) with channels 32-64-128-256-256-256 and a linear to K = 64 + 64, E_a's
        speech half + E_e's expression half, decoder with fixed-norm columns folded as the LibTorch
        peer and ours do: y = W (s ⊙ w), s = √V / ‖W_j‖. Inputs: a, e (B, V, 3) and the decoder
        matrix dec_w (3V, K) as a graph input, so that the column norms are computed on every call
        as in the other two implementations (as an initializer ORT would constant-fold them).
  fusion_frozen_b1.onnx, ..._b32    the same with dec_w an initializer: ORT folds the column
        norms and the scale into a pre-packed constant (what a deployment of frozen weights gets);
        timed as an extra row, not the peer.
  w2v_1s.onnx, w2v_10s.onnx        torchaudio.models.wav2vec2_base() (random weights, eval) on
        1 s / 10 s of 16 kHz audio, behind the waveform normalisation the LibTorch peer does; the
        positional conv's weight norm is removed (folded into the weight) before export.

For each model the script also writes its inputs and PyTorch's output as raw little-endian float32
(`<name>.<input>.bin`, `<name>.out.bin`) and models/manifest.json (files, shapes, FLOPs per call,
frames per call), which bench_ort.js reads: `node bench_ort.js --verify` compares ORT's output with
PyTorch's before any timing.

Usage: /usr/bin/python3 bench/peers/ort/export_onnx.py [out-dir] [--only=fusion|w2v]
       (default bench/peers/ort/models, both; the manifest is updated, not replaced)
Needs Debian's python3-torch and python3-torchaudio (1.13 / 0.13); not the `onnx` Python package.
"""
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

OPSET = 17

# ---- the paper-scale fusion module (bench/op_cases.hpp FusionScale) -----------------------------
GRID_ROWS, GRID_COLS = 141, 77
V = GRID_ROWS * GRID_COLS  # 10857
S = 128
K_A, K_E = 64, 64
K = K_A + K_E
CHANNELS = [32, 64, 128, 256, 256, 256]


def fusion_encoder_macs():
    m, s, cin = 0.0, S, 4
    for cout in CHANNELS:
        s = (s + 2 - 3) // 2 + 1
        m += s * s * cout * cin * 9
        cin = cout
    return m + cin * s * s * K


def fusion_fuse_flops_per_frame():
    return 2 * (2 * fusion_encoder_macs() + V * 3 * K)


def wav2vec2_base_flops(samples):
    kernel, stride = [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
    m, n, cin = 0.0, samples, 1
    for k, st in zip(kernel, stride):
        n = (n - k) // st + 1
        m += n * 512 * cin * k
        cin = 512
    T, E, FF = float(n), 768.0, 3072.0
    m += T * 512 * E
    m += T * E * (E / 16) * 128
    m += 12 * (T * (4 * E * E + 2 * E * FF) + 2 * T * T * E)
    return 2 * m, n


class Encoder(nn.Module):
    """6 × (conv 3×3 stride 2 pad 1, no bias → instance norm (affine) → ReLU) → linear to K."""

    def __init__(self):
        super().__init__()
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        cin, s = 4, S
        for cout in CHANNELS:
            # default init = U(±1/√(cin·9)), as the LibTorch peer's
            self.convs.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False))
            self.norms.append(nn.InstanceNorm2d(cout, affine=True, eps=1e-5))
            cin, s = cout, (s + 2 - 3) // 2 + 1
        self.fc = nn.Linear(cin * s * s, K)

    def forward(self, h):
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h)))
        return self.fc(h.flatten(1))


class Fusion(nn.Module):
    def __init__(self, frozen):
        super().__init__()
        torch.manual_seed(1)
        self.enc_a, self.enc_e = Encoder(), Encoder()
        dec_w = torch.randn(V * 3, K) / math.sqrt(V * 3)
        self.frozen = frozen
        if frozen:
            self.register_buffer("dec_w", dec_w)
        self.dec_w_init = dec_w
        self.register_buffer("dec_b", torch.zeros(V * 3))
        self.column_norm = math.sqrt(V)
        # ~78.5 % of the square is valid (a disk), like a face map with holes
        yy = torch.arange(S).view(S, 1).expand(S, S)
        xx = torch.arange(S).view(1, S).expand(S, S)
        valid = ((yy - S // 2) ** 2 + (xx - S // 2) ** 2 < (S // 2) ** 2).flatten()
        pix = valid.nonzero().flatten()
        P = pix.numel()
        self.P = P
        pix_map = torch.full((S * S,), P, dtype=torch.long)  # pixel → its valid index, or P (zero)
        pix_map[pix] = torch.arange(P)
        self.register_buffer("pix_map", pix_map)
        # vertex k of pixel p: pix_idx[k, p], its weight pix_w[k, 0, p, :] (repeated over xyz:
        # ORT's Mul broadcasting a (1, P, 1) operand over 3-wide rows is ≈ 10× slower)
        self.register_buffer("pix_idx", torch.randint(0, V, (P, 3), dtype=torch.long).t().contiguous())
        w = torch.rand(P, 3)
        w = (w / w.sum(1, keepdim=True)).t().contiguous().view(3, 1, P, 1)
        self.register_buffer("pix_w", w.expand(3, 1, P, 3).contiguous())
        self.register_buffer("mask", valid.float().view(1, 1, S, S))

    def encoder_input(self, dv):  # (B, V, 3) → (B, 4, S, S)
        # Gathers only (ONNX has no index_copy; index_put exports to a ScatterND with a
        # batch-expanded index tensor): per triangle corner k, gather the xyz rows of the pixels'
        # k-th vertices and accumulate them with their barycentric weights, then one more gather
        # places the P pixel values (and a zero row for the invalid pixels) on the S × S grid —
        # the memory traffic of bench_torch's index_select + index_copy_, plus one (B, S², 3) →
        # (B, 3, S²) transpose. Of the formulations tried this is ORT's fastest (1.5 ms per map at
        # batch 1 vs 1.9 ms for a (B, 3, P, 3) gather + ReduceSum; a ReduceSum over the 3
        # vertices of a (B, P, 3, 3) gather took 4–5 ms; ORT's Reduce* over non-trailing axes is slow).
        B = dv.shape[0]
        vals = dv.index_select(1, self.pix_idx[0]) * self.pix_w[0]   # (B, P, xyz)
        for k in (1, 2):
            vals = vals + dv.index_select(1, self.pix_idx[k]) * self.pix_w[k]
        vals = torch.cat([vals, torch.zeros(B, 1, 3)], 1)             # (B, P + 1, xyz)
        m = vals.index_select(1, self.pix_map).transpose(1, 2).reshape(B, 3, S, S)
        return torch.cat([m, self.mask.expand(B, 1, S, S)], 1)

    def decode(self, w, dec_w):
        # Column norms as a sum of squares over the rows (Mul + ReduceSum: ORT's ReduceL2 over
        # axis 0 of the (3V, K) matrix takes 4.5x as long), and one Gemm (transB) on dec_w as
        # stored, (3V, K) row-major; the zero bias only makes the exporter emit Gemm instead of
        # Transpose + MatMul.
        s = self.column_norm / ((dec_w * dec_w).sum(0).sqrt() + 1e-12)  # (K)
        return F.linear(w * s, dec_w, self.dec_b).view(w.shape[0], V, 3)

    def forward(self, a, e, dec_w=None):
        if self.frozen:
            dec_w = self.dec_w
        wa = self.enc_a(self.encoder_input(a))
        we = self.enc_e(self.encoder_input(e))
        w = torch.cat([wa[:, :K_A], we[:, K_A:]], 1)
        return self.decode(w, dec_w)


# ---- wav2vec2-base ------------------------------------------------------------------------------
class Wav2Vec2(nn.Module):
    """torchaudio's wav2vec2_base() (post-norm, group-norm extractor), random weights, behind the
    per-utterance waveform normalisation that the LibTorch peer (and Hugging Face) do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.model = torchaudio.models.wav2vec2_base()
        torch.nn.utils.remove_weight_norm(self.model.encoder.transformer.pos_conv_embed.conv)

    def forward(self, audio):  # (B, L) → (B, T, 768)
        mean = audio.mean(1, keepdim=True)
        var = ((audio - mean) ** 2).mean(1, keepdim=True)
        x, _ = self.model((audio - mean) / torch.sqrt(var + 1e-7))
        return x


def write_bin(path, t):
    t.detach().contiguous().float().numpy().tofile(path)


def export(out, name, module, inputs, flops, frames, note):
    """inputs: list of (onnx input name, tensor). Writes <name>.onnx, inputs, PyTorch output."""
    module.eval()
    with torch.no_grad():
        ref = module(*[t for _, t in inputs])
        torch.onnx.export(module, tuple(t for _, t in inputs), str(out / f"{name}.onnx"),
                          input_names=[n for n, _ in inputs], output_names=["out"],
                          opset_version=OPSET, do_constant_folding=True)
    entry = {"file": f"{name}.onnx", "inputs": {}, "output": {"shape": list(ref.shape), "file": f"{name}.out.bin"},
             "flops": flops, "frames": frames, "note": note}
    for n, t in inputs:
        f = f"{name}.{n}.bin"
        write_bin(out / f, t)
        entry["inputs"][n] = {"shape": list(t.shape), "file": f}
    write_bin(out / entry["output"]["file"], ref)
    print(f"{name}: {entry['file']} ({(out / entry['file']).stat().st_size / 1e6:.1f} MB), "
          f"output {tuple(ref.shape)}, |out| max {ref.abs().max().item():.4g}", flush=True)
    return entry


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--only=")]
    only = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--only=")), "fusion,w2v").split(",")
    out = Path(args[0] if args else Path(__file__).resolve().parent / "models")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    mf = out / "manifest.json"
    manifest = json.loads(mf.read_text()) if mf.exists() else {"models": {}}
    manifest.update({"torch": torch.__version__, "torchaudio": torchaudio.__version__, "opset": OPSET})
    if "fusion" in only:
        fpf = fusion_fuse_flops_per_frame()
        for frozen in (False, True):
            m = Fusion(frozen)
            for b in (1, 32):
                g = torch.Generator().manual_seed(11 + b)
                a = torch.randn(b, V, 3, generator=g)
                e = torch.randn(b, V, 3, generator=g)
                inputs = [("a", a), ("e", e)] + ([] if frozen else [("dec_w", m.dec_w_init)])
                name = f"fusion{'_frozen' if frozen else ''}_b{b}"
                manifest["models"][name] = export(out, name, m, inputs, b * fpf, b,
                                                  "dec_w initializer (norms constant-folded)" if frozen else "dec_w graph input")
    if "w2v" in only:  # ≈ 3 min: two 378 MB files
        w = Wav2Vec2()
        for sec in (1, 10):
            g = torch.Generator().manual_seed(6)
            audio = torch.randn(1, 16000 * sec, generator=g) * 0.1
            flops, _ = wav2vec2_base_flops(16000 * sec)
            manifest["models"][f"w2v_{sec}s"] = export(out, f"w2v_{sec}s", w, [("audio", audio)], flops, sec,
                                                       "torchaudio wav2vec2_base, random weights")
    mf.write_text(json.dumps(manifest, indent=1))
    print(f"wrote {mf}")


if __name__ == "__main__":
    main()
