"""Minimal deterministic safetensors writer for the PyTorch reference vectors (no extra packages).

Tensors are written in name order with their own dtype (float64 stays F64, float32 F32, int64 I64),
the header is compact JSON with sorted keys padded with spaces to 8 bytes, so the same inputs give
the same bytes on every run.
"""
import json
import struct

import torch

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}


def save(path, tensors, metadata=None):
    """tensors: dict name -> torch.Tensor; metadata: dict str -> (json-serialisable) value."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                                  for k, v in sorted(metadata.items())}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        b = t.numpy().tobytes(order="C")
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
