#!/usr/bin/python3
"""Tests of scripts/convert_flame.py on synthetic FLAME-like model files built here (FLAME itself
cannot be downloaded). Run: /usr/bin/python3 tests/test_convert_flame.py [path/to/blendfuse_cli]

With the blendfuse binary, the converted rig is also driven end to end: a sequence made by an
independent numpy implementation of FLAME's expression blendshapes + jaw LBS is solved by
`blendfuse rig-solve`, which must recover the expression weights and the jaw rotation."""

import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "convert_flame.py")
CLI = None


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        dt = {"F32": "<f4", "F64": "<f8", "I32": "<i4"}[v["dtype"]]
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[8 + n + b: 8 + n + e], dtype=dt).reshape(v["shape"])
    return out, meta


def synthetic_flame(V=400, n_shape=300, n_exp=100, seed=0):
    """A FLAME-structured dict: a curved face-sized patch in metres, 5 joints (root, neck, jaw,
    eyes), smooth random expression directions, skinning weights with the jaw on the lower half."""
    rng = np.random.default_rng(seed)
    n = int(np.sqrt(V))
    u, w = np.meshgrid(np.linspace(-0.07, 0.07, n), np.linspace(-0.1, 0.1, n))
    v = np.stack([u.ravel(), w.ravel(), 0.05 * np.cos(u.ravel() * 10)], axis=1)
    V = v.shape[0]
    f = []
    for j in range(n - 1):
        for i in range(n - 1):
            a = j * n + i
            f += [[a, a + 1, a + n], [a + 1, a + n + 1, a + n]]
    shapedirs = np.zeros((V, 3, n_shape + n_exp))
    for k in range(n_shape + n_exp):
        c = rng.uniform(-0.06, 0.06, 2)
        g = np.exp(-((v[:, 0] - c[0]) ** 2 + (v[:, 1] - c[1]) ** 2) / (2 * 0.03 ** 2))
        shapedirs[:, :, k] = g[:, None] * rng.normal(0, 0.002, 3)[None, :]
    J_regressor = np.abs(rng.normal(0, 1, (5, V)))
    J_regressor /= J_regressor.sum(axis=1, keepdims=True)
    weights = np.zeros((V, 5))
    jaw = 1 / (1 + np.exp((v[:, 1] + 0.02) / 0.01))  # lower half follows the jaw
    weights[:, 2] = jaw
    weights[:, 1] = 1 - jaw
    posedirs = rng.normal(0, 0.001, (V, 3, 36))
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {"v_template": v, "f": np.array(f, dtype=np.uint32), "shapedirs": shapedirs,
            "J_regressor": J_regressor, "weights": weights, "posedirs": posedirs, "kintree_table": kintree}


def rodrigues(r):
    a = np.linalg.norm(r)
    if a < 1e-12:
        return np.eye(3)
    k = r / a
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def flame_forward(m, psi, jaw_pose, n_shape=300):
    """FLAME's lbs() with only the jaw posed (independent of the C++ rig code); joint at the template."""
    v_shaped = m["v_template"] + m["shapedirs"][:, :, n_shape:n_shape + len(psi)] @ psi
    J = m["J_regressor"] @ m["v_template"]
    R = rodrigues(jaw_pose)
    feat = np.zeros(36)
    feat[9:18] = (R - np.eye(3)).ravel()
    v_posed = v_shaped + m["posedirs"] @ feat
    # transforms: every joint identity except the jaw: x -> R (x - J2) + J2
    w = m["weights"][:, 2:3]
    return v_posed + w * ((v_posed - J[2]) @ (R - np.eye(3)).T)


class _Ch(object):  # stands in for chumpy.ch.Ch when writing the test pickle
    pass


class _Csc(object):
    pass


class ConvertFlameTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.pkl = os.path.join(self.dir, "generic_model.pkl")
        self.out = os.path.join(self.dir, "flame.safetensors")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, obj):
        with open(self.pkl, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    def test_converts_expression_shapes_and_jaw(self):
        m = synthetic_flame()
        self.write(m)
        r = run(self.pkl, self.out)
        self.assertEqual(r.returncode, 0, r.stderr)
        t, meta = read_safetensors(self.out)
        self.assertEqual(meta["format"], "blendfuse.rig")
        self.assertEqual(meta["unit"], "m")
        names = json.loads(meta["names"])
        self.assertEqual(len(names), 100)
        self.assertEqual(names[0], "exp000")
        V = m["v_template"].shape[0]
        self.assertEqual(t["shapes"].shape, (100, V, 3))
        np.testing.assert_allclose(t["shapes"][7], m["shapedirs"][:, :, 307], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(t["neutral"], m["v_template"], rtol=1e-6)
        np.testing.assert_allclose(t["jaw.joint"], m["J_regressor"][2] @ m["v_template"], rtol=1e-12)
        np.testing.assert_allclose(t["jaw.weights"], m["weights"][:, 2], rtol=1e-6)
        self.assertEqual(t["jaw.posedirs"].shape, (9, V, 3))
        np.testing.assert_allclose(t["jaw.posedirs"][4], m["posedirs"][:, :, 13], rtol=1e-6, atol=1e-12)
        self.assertTrue(np.array_equal(t["faces"], m["f"].astype(np.int32)))
        self.assertTrue(np.all(t["flags"] == 0))

    def test_fewer_expressions_and_other_shape_count(self):
        m = synthetic_flame(n_shape=100, n_exp=50)
        self.write(m)
        r = run(self.pkl, self.out, "--shape-params", "100", "--expressions", "10")
        self.assertEqual(r.returncode, 0, r.stderr)
        t, meta = read_safetensors(self.out)
        self.assertEqual(t["shapes"].shape[0], 10)
        np.testing.assert_allclose(t["shapes"][0], m["shapedirs"][:, :, 100], rtol=1e-6, atol=1e-9)

    def test_chumpy_and_sparse_stand_ins(self):
        # a pickle whose arrays are chumpy objects and whose J_regressor is a scipy csc matrix, written
        # without chumpy or scipy: fake modules of those names hold classes with the same state
        m = synthetic_flame(V=100)
        chm = types.ModuleType("chumpy.ch")
        _Ch.__module__, _Ch.__qualname__ = "chumpy.ch", "Ch"
        chm.Ch = _Ch
        spm = types.ModuleType("scipy.sparse._csc")
        _Csc.__module__, _Csc.__qualname__ = "scipy.sparse._csc", "csc_matrix"
        spm.csc_matrix = _Csc
        saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy", "scipy.sparse", "scipy.sparse._csc")}
        sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": chm, "scipy": types.ModuleType("scipy"),
                            "scipy.sparse": types.ModuleType("scipy.sparse"), "scipy.sparse._csc": spm})
        try:
            obj = dict(m)
            for k in ("v_template", "shapedirs", "posedirs", "weights"):
                c = _Ch()
                c.x = m[k]
                obj[k] = c
            jr = m["J_regressor"]
            cols = [np.flatnonzero(jr[:, j]) for j in range(jr.shape[1])]
            s = _Csc()
            s.data = np.concatenate([jr[c, j] for j, c in enumerate(cols)])
            s.indices = np.concatenate(cols).astype(np.int32)
            s.indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
            s._shape = jr.shape
            obj["J_regressor"] = s
            self.write(obj)
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v
        r = run(self.pkl, self.out)
        self.assertEqual(r.returncode, 0, r.stderr)
        t, _ = read_safetensors(self.out)
        np.testing.assert_allclose(t["jaw.joint"], m["J_regressor"][2] @ m["v_template"], rtol=1e-12)
        np.testing.assert_allclose(t["neutral"], m["v_template"], rtol=1e-6)

    def test_bad_inputs(self):
        m = synthetic_flame(V=100)
        for key in ("posedirs", "J_regressor"):
            bad = dict(m)
            del bad[key]
            self.write(bad)
            r = run(self.pkl, self.out)
            self.assertEqual(r.returncode, 1)
            self.assertIn(self.pkl, r.stderr)
            self.assertIn("missing '%s'" % key, r.stderr)
        bad = dict(m, posedirs=m["posedirs"][:, :, :30])
        self.write(bad)
        r = run(self.pkl, self.out)
        self.assertIn("posedirs has shape", r.stderr)
        bad = dict(m, shapedirs=m["shapedirs"][:, :, :300])
        self.write(bad)
        self.assertIn("no expression directions", run(self.pkl, self.out).stderr)
        sd = m["shapedirs"].copy()
        sd[3, 1, 350] = np.nan
        self.write(dict(m, shapedirs=sd))
        self.assertIn("non-finite", run(self.pkl, self.out).stderr)
        with open(self.pkl, "wb") as f:
            f.write(b"not a pickle")
        r = run(self.pkl, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a readable FLAME pickle", r.stderr)
        self.assertIn("missing.pkl", run(os.path.join(self.dir, "missing.pkl"), self.out).stderr)
        self.assertFalse(os.path.exists(self.out))

    def test_refuses_code_in_pickles(self):
        class Evil:
            def __reduce__(self):
                return (os.system, ("true",))
        self.write({"v_template": Evil()})
        r = run(self.pkl, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("refusing to load", r.stderr)

    @unittest.skipUnless(len(sys.argv) > 1 or CLI, "no blendfuse binary given")
    def test_rig_solve_recovers_flame_parameters(self):
        # the converted rig in the C++ solver against an independent numpy FLAME forward pass
        m = synthetic_flame(V=900, seed=3)
        self.write(m)
        self.assertEqual(run(self.pkl, self.out, "--expressions", "20").returncode, 0)
        rng = np.random.default_rng(5)
        T = 4
        psi = rng.normal(0, 1, (T, 20))
        jaw = np.stack([np.array([0.01 * (t + 1), 0.0, 0.0]) for t in range(T)])
        seq = np.stack([flame_forward(m, psi[t], jaw[t]) - m["v_template"] for t in range(T)]).astype("<f4")
        seq_path = os.path.join(self.dir, "seq.npy")
        np.save(seq_path, seq)
        w_path = os.path.join(self.dir, "w.npy")
        j_path = os.path.join(self.dir, "w.json")
        r = subprocess.run([CLI, "rig-solve", "--rig", self.out, "--bounded", "--range=-5,5", "--l2", "0",
                            "--smooth", "0", "--offsets", "--units", "m", "--in", seq_path, "--out", w_path,
                            "--json", j_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        w = np.load(w_path)
        self.assertEqual(w.shape, (T, 23))
        with open(j_path) as f:
            names = json.load(f)["names"]
        self.assertEqual(names[-3:], ["jaw_rx", "jaw_ry", "jaw_rz"])
        # linearised jaw: the error grows like θ², so recover within a θ-relative tolerance
        np.testing.assert_allclose(w[:, 20], jaw[:, 0], rtol=0.1, atol=2e-3)
        np.testing.assert_allclose(w[:, :20], psi, atol=0.15)
        self.assertLess(np.abs(w[0, :20] - psi[0]).max(), 0.05)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        CLI = sys.argv.pop(1)
    unittest.main()
