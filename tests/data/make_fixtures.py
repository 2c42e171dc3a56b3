#!/usr/bin/python3
"""Regenerates the small I/O fixtures in tests/data/ (run: /usr/bin/python3 tests/data/make_fixtures.py).

Everything is written by real NumPy (np.save / numpy.lib.format.write_array) or by hand with
`struct` / the `wave` module, so the C++ readers are tested against independent writers. The
output is deterministic (no timestamps, fixed values)."""
import os
import struct
import wave

import numpy as np
from numpy.lib import format as npf

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def write_npy(name, a, version=None):
    with open(path(name), "wb") as f:
        if version is None:
            np.save(f, a)
        else:
            npf.write_array(f, a, version=version)


def main():
    # ---- .npy -------------------------------------------------------------------------------
    a = (np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0).astype("<f4")
    write_npy("f4_2x3.npy", a)                                  # v1.0, <f4
    write_npy("f4_2x3_v2.npy", a, version=(2, 0))               # v2.0 header
    write_npy("f4_2x3_v3.npy", a, version=(3, 0))               # v3.0 header
    seq = (np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3) / 7.0).astype("<f8")
    write_npy("f8_seq_2x4x3.npy", seq)                          # <f8, (T, V, 3)
    write_npy("f4_seq_flat_2x12.npy", seq.reshape(2, 12).astype("<f4"))  # (T, V*3)
    write_npy("i4_5.npy", np.array([-3, 0, 1, 2, 2147483647], dtype="<i4"))
    write_npy("i8_2x2.npy", np.array([[-5, 6], [7, 1 << 40]], dtype="<i8"))
    write_npy("f4_scalar.npy", np.array(2.5, dtype="<f4"))     # shape ()
    write_npy("f4_empty_0x3.npy", np.zeros((0, 3), dtype="<f4"))
    write_npy("fortran_2x3.npy", np.asfortranarray(a))          # fortran_order: True
    write_npy("bigendian_2x3.npy", a.astype(">f4"))             # big-endian
    write_npy("f2_3.npy", np.array([1, 2, 3], dtype="<f2"))     # unsupported dtype
    nan = seq.astype("<f4").copy()
    nan[1, 2, 1] = np.nan
    write_npy("nan_seq_2x4x3.npy", nan)                         # NaN at frame 1, vertex 2, y

    # ---- OBJ: v/vt/vn faces, a quad, negative indices, ignored statements --------------------
    with open(path("quad_vtvn.obj"), "w") as f:
        f.write("# quad + triangle with texture and normal indices\n"
                "mtllib none.mtl\no thing\n"
                "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 1.25e-1\n"
                "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                "vn 0 0 1\n"
                "g group1\ns off\nusemtl mat\n"
                "f 1/1/1 2/2/1 3/3/1 4/4/1\n"     # quad -> 2 triangles
                "f -5//1 -4//1 -1//1\n"           # negative (relative) indices, v//vn
                "l 1 2\n")

    # ---- PLY: ascii with extra properties and a quad ------------------------------------------
    verts = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.5, 0.5, -2.5)]
    faces = [(0, 1, 2, 3), (0, 1, 4)]
    with open(path("quad_ascii.ply"), "w", newline="\n") as f:
        f.write("ply\nformat ascii 1.0\ncomment made by make_fixtures.py\n"
                f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
                "property uchar red\nproperty uchar green\nproperty uchar blue\n"
                f"element face {len(faces)}\nproperty list uchar int vertex_indices\n"
                "property int flags\nend_header\n")
        for i, v in enumerate(verts):
            f.write(f"{v[0]} {v[1]} {v[2]} {i * 10} 0 255\n")
        for fc in faces:
            f.write(f"{len(fc)} " + " ".join(map(str, fc)) + " 7\n")

    # ---- PLY: binary little-endian double (Florence4D style) with extra vertex/face data ------
    def binary_ply(name, endian, fmt_name):
        e = "<" if endian == "le" else ">"
        hdr = ("ply\nformat " + fmt_name + " 1.0\ncomment double precision vertices\n"
               f"element vertex {len(verts)}\nproperty double x\nproperty double y\nproperty double z\n"
               "property double nx\nproperty list uchar float uv\n"
               f"element face {len(faces)}\nproperty list int uint vertex_indices\n"
               "property list uchar float texcoord\n"
               "element material 1\nproperty short id\nend_header\n")
        body = b""
        for i, v in enumerate(verts):
            body += struct.pack(e + "dddd", v[0], v[1], v[2], 0.25 * i)
            body += struct.pack(e + "Bff", 2, 0.5, 0.75)
        for fc in faces:
            body += struct.pack(e + "i" + "I" * len(fc), len(fc), *fc)
            body += struct.pack(e + "B", 0)
        body += struct.pack(e + "h", 3)
        with open(path(name), "wb") as f:
            f.write(hdr.encode() + body)

    binary_ply("quad_binary_le_double.ply", "le", "binary_little_endian")
    binary_ply("quad_binary_be_double.ply", "be", "binary_big_endian")

    # ---- WAV: 16-bit PCM stereo at 22.05 kHz written by Python's wave module ------------------
    sr, n = 22050, 2205
    t = np.arange(n) / sr
    left = np.round(0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    right = np.round(0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(path("stereo_pcm16_22050.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.stack([left, right], axis=1).tobytes())


if __name__ == "__main__":
    main()
