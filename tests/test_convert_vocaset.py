#!/usr/bin/python3
"""Tests of scripts/convert_vocaset_templates.py (run: /usr/bin/python3 tests/test_convert_vocaset.py)."""

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                      "convert_vocaset_templates.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes (BINSTRING), as in a pickle made by Python 2."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


class ConvertVocasetTemplatesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.pkl = os.path.join(self.dir, "templates.pkl")

    def tearDown(self):
        self.tmp.cleanup()

    def write_pkl(self, obj, protocol=2):
        with open(self.pkl, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)

    def test_converts_every_subject_to_float32_npy(self):
        rng = np.random.default_rng(3)
        a = rng.standard_normal((7, 3))               # float64, as FaceFormer's file
        b = rng.standard_normal(21).astype(np.float32)  # flat (V*3,) is reshaped
        self.write_pkl({"FaceTalk_170725_00137_TA": a, "FaceTalk_170809_00138_TA": b})
        r = run(self.pkl)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = os.path.join(self.dir, "templates")
        self.assertEqual(sorted(os.listdir(out)),
                         ["FaceTalk_170725_00137_TA.npy", "FaceTalk_170809_00138_TA.npy"])
        ra = np.load(os.path.join(out, "FaceTalk_170725_00137_TA.npy"))
        self.assertEqual(ra.dtype, np.dtype("<f4"))
        self.assertEqual(ra.shape, (7, 3))
        np.testing.assert_array_equal(ra, a.astype(np.float32))
        rb = np.load(os.path.join(out, "FaceTalk_170809_00138_TA.npy"))
        np.testing.assert_array_equal(rb, b.reshape(7, 3))
        self.assertIn("wrote 2 subject templates", r.stdout)

    def test_explicit_out_dir_and_vertex_count(self):
        self.write_pkl({"s1": np.zeros((4, 3))})
        out = os.path.join(self.dir, "x", "templates")
        r = run(self.pkl, out, "--vertices", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "s1.npy")))
        self.assertEqual([f for f in os.listdir(out) if f.endswith(".tmp")], [])
        r = run(self.pkl, out, "--vertices", "5023")
        self.assertEqual(r.returncode, 1)
        self.assertIn("templates.pkl: templates have 4 vertices, expected 5023", r.stderr)

    def test_bad_inputs_name_the_file(self):
        cases = [
            ([np.zeros((4, 3))], "expected a dict"),
            ({}, "holds no subjects"),
            ({"s1": np.zeros((4, 2))}, "subject s1: expected shape (V, 3)"),
            ({"s1": np.zeros((4, 3)), "s2": np.zeros((5, 3))}, "subject s2 has 5 vertices, the others have 4"),
            ({"s1": np.array([[0, 0, 0], [0, np.nan, 0]])}, "non-finite value at vertex 1, coordinate 1"),
            ({"../evil": np.zeros((4, 3))}, "cannot be a file name"),
            ({"s1": "text"}, "not a numeric array"),
        ]
        for obj, message in cases:
            with self.subTest(message=message):
                self.write_pkl(obj)
                r = run(self.pkl)
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertIn(self.pkl + ": ", r.stderr)
                self.assertIn(message, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "templates", "s1.npy")))

    def test_missing_and_corrupt_files(self):
        r = run(os.path.join(self.dir, "nope.pkl"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.pkl: cannot read", r.stderr)
        self.write_pkl({"s1": np.zeros((4, 3))})
        with open(self.pkl, "rb") as f:
            data = f.read()
        with open(self.pkl, "wb") as f:
            f.write(data[: len(data) // 2])
        r = run(self.pkl)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a readable pickle", r.stderr)

    def test_refuses_code_in_the_pickle_unless_trusted(self):
        self.write_pkl({"s1": _Evil()})
        r = run(self.pkl)
        self.assertEqual(r.returncode, 1)
        self.assertIn("refusing to load global", r.stderr)

    def test_python2_latin1_pickle(self):
        # Like FaceFormer's file: keys and the array buffer are Python 2 str (BINSTRING opcodes,
        # latin-1 decoded on load), arrays via numpy.core.multiarray._reconstruct.
        arr = np.arange(90, dtype=np.float64).reshape(30, 3) * 0.5  # > 255 bytes: BINSTRING
        with open(self.pkl, "wb") as f:
            _Py2Pickler(f, protocol=2).dump({b"FaceTalk_\xe9": arr})
        with open(self.pkl, "rb") as f:
            self.assertNotIn(b"_codecs", f.read())
        r = run(self.pkl)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = np.load(os.path.join(self.dir, "templates", "FaceTalk_\u00e9.npy"))
        np.testing.assert_array_equal(got, arr.astype(np.float32))


if __name__ == "__main__":
    unittest.main()
