#!/usr/bin/python3
"""Convert a FLAME model file (``generic_model.pkl``) to a blendfuse rig (``.safetensors``).

FLAME (Li et al. 2017, https://flame.is.tue.mpg.de) cannot be downloaded here (it needs a licence
and a login), so this converter is tested on synthetic files of the same structure
(tests/test_convert_flame.py). What it assumes about the pickle — a dict, read with
``encoding='latin1'`` as FLAME's own loaders do:

  v_template     (V, 3)         template mesh, metres (V = 5023 for FLAME)
  f              (F, 3)         triangles
  shapedirs      (V, 3, N)      identity (first --shape-params columns, 300 in FLAME 2020) then
                                expression directions (the rest: 100 in FLAME 2020)
  J_regressor    (J, V)         joint regressor (dense, or a scipy.sparse csc/csr matrix)
  weights        (V, J)         linear-blend-skinning weights
  posedirs       (V, 3, 9(J-1)) pose correctives: one block of 9 per non-root joint, the entries of
                                (R_j - I) row-major, in joint order (as FLAME's and SMPL's lbs())
  kintree_table  (2, J)         parents (row 0; the root's is -1 or 2**32-1) and joint ids

FLAME's joints are global (root), neck, jaw, left eye, right eye: the jaw is joint 2 (--jaw-joint),
child of the neck. The rig written keeps the template, the triangles, the expression directions as
shapes ``exp000``..., and the jaw: its joint position J_regressor[jaw] @ v_template, its skinning
weights and its 9 posedirs (see include/blendfuse/rig/rig.hpp for how they are evaluated). The
joint is taken at the template (FLAME regresses it from the shaped mesh). The unit is "m".

    /usr/bin/python3 scripts/convert_flame.py generic_model.pkl flame_rig.safetensors [--expressions 50]

Needs numpy only. The pickle is read by an unpickler that accepts only numpy arrays and builtins,
plus two stand-ins that are read without importing their packages: chumpy arrays (``chumpy.ch.Ch``,
whose pickled state holds the array as ``x``) and scipy sparse matrices (csc/csr, rebuilt from
``data``/``indices``/``indptr``/``_shape``). ``--trust`` uses the plain unpickler instead (it runs
arbitrary code and needs chumpy/scipy installed; only for files you trust). The output is written
atomically. On bad input the script prints ``<file>: what is wrong`` to stderr and exits with 1.
"""

import argparse
import json
import os
import pickle
import struct
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from numpy_pickle import NUMPY_PICKLE_GLOBALS as _ALLOWED  # noqa: E402


class ConvertError(Exception):
    pass


class _Stub(object):
    """Holds the pickled state of an object whose class is not imported."""

    kind = "?"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = state[1]  # (dict, slots) form
        if not isinstance(state, dict):
            raise ConvertError("unexpected pickled state of a %s" % self.kind)
        self.state = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in state.items()}


class _ChumpyStub(_Stub):
    kind = "chumpy array"

    def to_array(self):
        if "x" not in self.state:
            raise ConvertError("a chumpy object without an 'x' array (a derived chumpy expression?): "
                               "convert the file with chumpy installed and --trust")
        return np.asarray(self.state["x"])


class _SparseStub(_Stub):
    kind = "scipy sparse matrix"
    fmt = "csc"

    def to_array(self):
        s = self.state
        try:
            data, indices, indptr = np.asarray(s["data"]), np.asarray(s["indices"]), np.asarray(s["indptr"])
            shape = tuple(int(x) for x in s.get("_shape", s.get("shape")))
        except (KeyError, TypeError) as e:
            raise ConvertError("unreadable %s sparse matrix: %s" % (self.fmt, e))
        out = np.zeros(shape, dtype=np.float64)
        major = shape[1] if self.fmt == "csc" else shape[0]
        if len(indptr) != major + 1:
            raise ConvertError("corrupt %s sparse matrix: indptr has %d entries for %d %s"
                               % (self.fmt, len(indptr), major, "columns" if self.fmt == "csc" else "rows"))
        for j in range(major):
            for k in range(int(indptr[j]), int(indptr[j + 1])):
                if self.fmt == "csc":
                    out[indices[k], j] += data[k]
                else:
                    out[j, indices[k]] += data[k]
        return out


class _CscStub(_SparseStub):
    fmt = "csc"


class _CsrStub(_SparseStub):
    fmt = "csr"


_STUBS = {("chumpy.ch", "Ch"): _ChumpyStub}
for _m in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _STUBS[(_m, "csc_matrix")] = _CscStub
for _m in ("scipy.sparse.csr", "scipy.sparse._csr"):
    _STUBS[(_m, "csr_matrix")] = _CsrStub


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _STUBS:
            return _STUBS[(module, name)]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("refusing to load %s.%s (only numpy arrays, chumpy arrays and scipy "
                                     "sparse matrices are expected; --trust lifts this)" % (module, name))


def _as_array(v):
    if isinstance(v, _Stub):
        return v.to_array()
    return np.asarray(v)


def load_flame(pkl_path, trust=False):
    try:
        with open(pkl_path, "rb") as f:
            if trust:
                obj = pickle.load(f, encoding="latin1")
            else:
                obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (pkl_path, e.strerror or e))
    except ConvertError as e:
        raise ConvertError("%s: %s" % (pkl_path, e))
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise ConvertError("%s: not a readable FLAME pickle: %s" % (pkl_path, e))
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a dict (FLAME model), got %s" % (pkl_path, type(obj).__name__))
    model = {}
    for k, v in obj.items():
        key = k.decode("latin1") if isinstance(k, bytes) else k
        model[key] = v
    out = {}
    for key in ("v_template", "f", "shapedirs", "J_regressor", "weights", "posedirs", "kintree_table"):
        if key not in model:
            raise ConvertError("%s: missing '%s' (a FLAME model has v_template, f, shapedirs, J_regressor, "
                               "weights, posedirs, kintree_table)" % (pkl_path, key))
        try:
            a = _as_array(model[key])
            if key == "J_regressor" and hasattr(model[key], "toarray"):  # real scipy under --trust
                a = model[key].toarray()
            out[key] = np.asarray(a, dtype=np.float64)
        except ConvertError as e:
            raise ConvertError("%s: %s: %s" % (pkl_path, key, e))
        except (TypeError, ValueError) as e:
            raise ConvertError("%s: %s is not a numeric array: %s" % (pkl_path, key, e))
        if key not in ("kintree_table",) and not np.all(np.isfinite(out[key])):
            i = int(np.flatnonzero(~np.isfinite(out[key].ravel()))[0])
            raise ConvertError("%s: %s has a non-finite value at flat index %d" % (pkl_path, key, i))
    return out


def _check_shape(pkl_path, name, a, shape):
    ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ConvertError("%s: %s has shape %s, expected %s" % (pkl_path, name, a.shape, want))


def build_rig(model, pkl_path, shape_params=300, expressions=None, jaw_joint=2):
    v = model["v_template"]
    _check_shape(pkl_path, "v_template", v, (None, 3))
    V = v.shape[0]
    f = model["f"]
    _check_shape(pkl_path, "f", f, (None, 3))
    if f.size and (f.min() < 0 or f.max() >= V or np.any(f != np.round(f))):
        raise ConvertError("%s: f has indices outside [0, %d)" % (pkl_path, V))
    sd = model["shapedirs"]
    _check_shape(pkl_path, "shapedirs", sd, (V, 3, None))
    n_exp_avail = sd.shape[2] - shape_params
    if n_exp_avail <= 0:
        raise ConvertError("%s: shapedirs has %d columns, no expression directions after the %d shape ones "
                           "(--shape-params)" % (pkl_path, sd.shape[2], shape_params))
    n_exp = n_exp_avail if expressions is None else expressions
    if n_exp < 1 or n_exp > n_exp_avail:
        raise ConvertError("%s: --expressions %d not in [1, %d]" % (pkl_path, n_exp, n_exp_avail))
    jr = model["J_regressor"]
    _check_shape(pkl_path, "J_regressor", jr, (None, V))
    J = jr.shape[0]
    if not 1 <= jaw_joint < J:
        raise ConvertError("%s: jaw joint %d not in [1, %d)" % (pkl_path, jaw_joint, J))
    w = model["weights"]
    _check_shape(pkl_path, "weights", w, (V, J))
    pd = model["posedirs"]
    _check_shape(pkl_path, "posedirs", pd, (V, 3, 9 * (J - 1)))
    kt = model["kintree_table"]
    _check_shape(pkl_path, "kintree_table", kt, (2, J))
    parents = kt[0].astype(np.int64)
    if parents[jaw_joint] < 0 or parents[jaw_joint] >= J:
        raise ConvertError("%s: kintree_table gives joint %d no parent (is it the jaw?)" % (pkl_path, jaw_joint))
    joint = jr[jaw_joint] @ v
    posedirs = pd[:, :, 9 * (jaw_joint - 1): 9 * jaw_joint]  # (V, 3, 9)
    return {
        "neutral": v.astype("<f4"),
        "faces": f.astype("<i4"),
        "shapes": np.ascontiguousarray(np.transpose(sd[:, :, shape_params: shape_params + n_exp], (2, 0, 1))).astype("<f4"),
        "flags": np.zeros(n_exp, dtype="<i4"),
        "jaw.joint": joint.astype("<f8"),
        "jaw.weights": w[:, jaw_joint].astype("<f4"),
        "jaw.posedirs": np.ascontiguousarray(np.transpose(posedirs, (2, 0, 1))).astype("<f4"),
    }, ["exp%03d" % i for i in range(n_exp)]


_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32"}


def safetensors_bytes(tensors, metadata):
    header = {"__metadata__": metadata}
    off = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.tobytes()
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_atomic(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConvertError("%s: output folder does not exist" % path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def convert(pkl_path, out_path, shape_params=300, expressions=None, jaw_joint=2, trust=False):
    model = load_flame(pkl_path, trust=trust)
    tensors, names = build_rig(model, pkl_path, shape_params, expressions, jaw_joint)
    meta = {"format": "blendfuse.rig", "version": "1", "unit": "m", "names": json.dumps(names),
            "name": "flame", "source": "scripts/convert_flame.py from %s" % os.path.basename(pkl_path)}
    write_atomic(out_path, safetensors_bytes(tensors, meta))
    return tensors, names


def main(argv=None):
    p = argparse.ArgumentParser(description="Convert a FLAME model pickle to a blendfuse rig (.safetensors).")
    p.add_argument("pkl", help="FLAME model file (generic_model.pkl)")
    p.add_argument("out", help="output rig .safetensors")
    p.add_argument("--shape-params", type=int, default=300, help="identity columns of shapedirs before the expressions (300 in FLAME 2020)")
    p.add_argument("--expressions", type=int, default=None, help="expression directions to keep (default all)")
    p.add_argument("--jaw-joint", type=int, default=2, help="index of the jaw joint (2 in FLAME)")
    p.add_argument("--trust", action="store_true", help="plain unpickler (runs arbitrary code; needs chumpy/scipy)")
    a = p.parse_args(argv)
    try:
        tensors, names = convert(a.pkl, a.out, a.shape_params, a.expressions, a.jaw_joint, a.trust)
    except ConvertError as e:
        print(str(e), file=sys.stderr)
        return 1
    print("convert_flame: wrote %s (%d vertices, %d expression shapes + jaw, unit m)"
          % (a.out, tensors["neutral"].shape[0], len(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
