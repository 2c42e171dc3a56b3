#!/usr/bin/python3
"""Convert FaceFormer's VOCAset ``templates.pkl`` to blendfuse ``templates/<subject>.npy`` files.

FaceFormer ships ``vocaset/templates.pkl``: a Python 2 pickle of a dict mapping each subject name
(``FaceTalk_170725_00137_TA``, ...) to its neutral FLAME mesh, an array of shape (5023, 3). This
writes one float32 ``(V, 3)`` ``.npy`` per subject, which ``blendfuse::data::Dataset::load`` reads as
the per-subject template (deformation = sequence - template).

    /usr/bin/python3 scripts/convert_vocaset_templates.py vocaset/templates.pkl [OUT_DIR]

OUT_DIR defaults to ``templates/`` next to the pickle. Needs numpy only. The pickle is read with
``encoding='latin1'`` (as FaceFormer does) by an unpickler that only accepts the numpy and builtin
types such a file contains; ``--trust`` lifts that restriction (unpickling runs arbitrary code, so use
it only for files you trust). Files are written atomically (temp file + rename). On bad input the
script prints ``<file>: what is wrong`` to stderr and exits with status 1.
"""

import argparse
import os
import pickle
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from numpy_pickle import NUMPY_PICKLE_GLOBALS as _ALLOWED  # noqa: E402


class ConvertError(Exception):
    """A problem with an input or output file; str() is '<file>: what is wrong'."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                "refusing to load global %s.%s (not a numpy array; pass --trust to allow)" % (module, name))
        return super().find_class(module, name)


def load_templates(pkl_path, trust=False):
    """Returns {subject: float32 (V, 3) array}, validated (same V for all, finite values)."""
    try:
        with open(pkl_path, "rb") as f:
            if trust:
                obj = pickle.load(f, encoding="latin1")
            else:
                obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (pkl_path, e.strerror or e))
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise ConvertError("%s: not a readable pickle: %s" % (pkl_path, e))
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a dict subject -> (V, 3) array, got %s" % (pkl_path, type(obj).__name__))
    if not obj:
        raise ConvertError("%s: the dict holds no subjects" % pkl_path)
    out = {}
    num_vertices = None
    for key in sorted(obj, key=str):
        subject = key.decode("latin1") if isinstance(key, bytes) else key
        if not isinstance(subject, str) or not subject or subject in (".", "..") or "/" in subject \
                or "\\" in subject or "\0" in subject:
            raise ConvertError("%s: subject name %r cannot be a file name" % (pkl_path, key))
        try:
            a = np.asarray(obj[key], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ConvertError("%s: subject %s: not a numeric array: %s" % (pkl_path, subject, e))
        if a.ndim == 1 and a.size % 3 == 0:
            a = a.reshape(-1, 3)
        if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
            raise ConvertError("%s: subject %s: expected shape (V, 3), got %s" % (pkl_path, subject, a.shape))
        if num_vertices is None:
            num_vertices = a.shape[0]
        elif a.shape[0] != num_vertices:
            raise ConvertError("%s: subject %s has %d vertices, the others have %d"
                               % (pkl_path, subject, a.shape[0], num_vertices))
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            i = int(bad[0])
            raise ConvertError("%s: subject %s: non-finite value at vertex %d, coordinate %d"
                               % (pkl_path, subject, i // 3, i % 3))
        out[subject] = np.ascontiguousarray(a, dtype="<f4")
    return out


def save_npy_atomic(path, array):
    """np.save to a temporary file in the same folder, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def convert(pkl_path, out_dir=None, expected_vertices=None, trust=False):
    """Converts `pkl_path`; returns the list of written paths."""
    templates = load_templates(pkl_path, trust=trust)
    if expected_vertices is not None:
        v = next(iter(templates.values())).shape[0]
        if v != expected_vertices:
            raise ConvertError("%s: templates have %d vertices, expected %d" % (pkl_path, v, expected_vertices))
    if out_dir is None:
        out_dir = os.path.join(os.path.dirname(os.path.abspath(pkl_path)), "templates")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ConvertError("%s: cannot create folder: %s" % (out_dir, e.strerror or e))
    written = []
    for subject, a in templates.items():
        path = os.path.join(out_dir, subject + ".npy")
        try:
            save_npy_atomic(path, a)
        except OSError as e:
            raise ConvertError("%s: cannot write: %s" % (path, e.strerror or e))
        written.append(path)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("templates_pkl", help="FaceFormer's vocaset/templates.pkl")
    p.add_argument("out_dir", nargs="?", default=None,
                   help="output folder (default: templates/ next to the pickle)")
    p.add_argument("--vertices", type=int, default=None,
                   help="required vertex count (e.g. 5023 for FLAME)")
    p.add_argument("--trust", action="store_true",
                   help="allow any pickle content (runs arbitrary code from the file)")
    args = p.parse_args(argv)
    try:
        written = convert(args.templates_pkl, args.out_dir, args.vertices, args.trust)
    except ConvertError as e:
        print(str(e), file=sys.stderr)
        return 1
    print("wrote %d subject templates to %s" % (len(written), os.path.dirname(written[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
