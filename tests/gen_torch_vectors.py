#!/usr/bin/python3
"""Regenerates the PyTorch reference vectors in tests/vectors/ (byte-for-byte reproducible).

Run with Debian's interpreter, which has python3-torch:   /usr/bin/python3 tests/gen_torch_vectors.py
`--check` regenerates into a temporary folder and fails if any committed file differs.
Each tests/torch/gen_<family>.py module defines generate(outdir) and writes <family>.safetensors.
"""
import argparse
import filecmp
import importlib.util
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# The vectors must not depend on the machine: pin what Debian's torch would otherwise pick up.
# * BLAS: with libopenblas0-openmp (or -pthread) installed, the libblas.so.3 alternative points to
#   OpenBLAS and matmuls differ in their last bits. Load the reference BLAS/LAPACK instead.
# * CPU kernels: torch dispatches its own vectorised kernels by ISA; AVX2 is what every machine of
#   this project has (AVX2 and AVX-512 CPUs), and the committed vectors were made with it.
# Both are fixed before torch is imported, by re-running this script with the environment set.
PINNED_ENV = {
    "LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu/blas:/usr/lib/x86_64-linux-gnu/lapack",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OMP_NUM_THREADS": "1",
}
if os.environ.get("BLENDFUSE_TORCH_PINNED") != "1":
    env = dict(os.environ, BLENDFUSE_TORCH_PINNED="1", **PINNED_ENV)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch  # noqa: E402  (after the environment is pinned)


def check_pinned_blas():
    """Fails loudly if the reference BLAS is not the one torch loaded (e.g. its path moved)."""
    torch.ones(2, 2) @ torch.ones(2, 2)  # make sure the BLAS is loaded
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line or "lapack" in line}
    bad = [lib for lib in libs if "openblas" in lib or "mkl" in lib]
    if bad:
        sys.exit("gen_torch_vectors: torch loaded " + ", ".join(sorted(bad)) +
                 " instead of the reference BLAS in /usr/lib/x86_64-linux-gnu/blas (libblas3)")


def modules():
    d = os.path.join(HERE, "torch")
    sys.path.insert(0, d)
    for name in sorted(os.listdir(d)):
        if name.startswith("gen_") and name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(d, name))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            yield name[4:-3], mod


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="verify committed vectors are reproduced")
    ap.add_argument("--only", help="regenerate a single family")
    args = ap.parse_args()
    check_pinned_blas()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = os.path.join(HERE, "vectors")
    tmp = tempfile.mkdtemp() if args.check else None
    bad = []
    for fam, mod in modules():
        if args.only and fam != args.only:
            continue
        torch.manual_seed(1234)
        target = tmp or out
        mod.generate(target)
        if args.check:
            for f in sorted(os.listdir(tmp)):
                ref = os.path.join(out, f)
                if not os.path.exists(ref) or not filecmp.cmp(ref, os.path.join(tmp, f), shallow=False):
                    bad.append(f)
                os.remove(os.path.join(tmp, f))
        print(f"{fam}: ok", flush=True)
    if bad:
        print("differs from the committed vectors: " + ", ".join(sorted(set(bad))))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
