"""The project's one restricted unpickler, for Paddle weights (.pdparams/.pdopt) and insightface
.bin files: a hostile pickle is refused before any code in it runs.

pickle reaches callables only through ``find_class``; it answers just what those files need
(numpy array, dtype and scalar reconstruction, ``tuple`` for Paddle's (name, array) tensors,
OrderedDict, latin-1 bytes of protocol 2), with argument checks, and refuses every other global.
"""
import collections
import hashlib
import os
import pickle
import struct

import numpy as np
import paddle

from .errors import ConfigError

try:  # numpy >= 1.26 (pickles written by numpy 2 name numpy._core)
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:
    from numpy.core.multiarray import _reconstruct, scalar

# what a malformed or truncated pickle raises besides UnpicklingError
UNPICKLE_ERRORS = (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                   UnicodeDecodeError, OverflowError, RecursionError, MemoryError, struct.error)


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a global (or an argument) outside what plain data needs."""


class ChecksumError(ConfigError):
    """The bytes of a file differ from the sha256 recorded for it."""


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise RefusedPickle(f"_codecs.encode with encoding {encoding!r} is refused")
    return text.encode("latin-1", errors)


def _safe_dtype(obj, *args):
    dt = np.dtype(obj)
    if dt.hasobject:
        raise RefusedPickle(f"numpy dtype {obj!r} holds Python objects; refused")
    return dt


def _np_reconstruct(*args):
    if not (args and args[0] is np.ndarray):
        raise RefusedPickle("numpy _reconstruct of a subclass is refused")
    return _reconstruct(*args)


def _np_scalar(dtype, *args):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedPickle("numpy scalar of an object dtype is refused")
    return scalar(dtype, *args)


def _tuple(items=()):  # paddle.save reduces a Tensor to tuple((name, array))
    return tuple(items)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "tuple"): _tuple,
    ("collections", "OrderedDict"): _ordered_dict,
    ("numpy", "ndarray"): np.ndarray,  # only as _reconstruct's first argument
    ("numpy", "dtype"): _safe_dtype,
}
for _m in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_m, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_m, "scalar")] = _np_scalar


class RestrictedUnpickler(pickle.Unpickler):
    """Loads plain data only: str/bytes, numbers, lists, tuples, dicts and non-object numpy arrays."""

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise RefusedPickle(f"global '{module}.{name}' is refused")
        return fn


class _HashingReader:
    """Hashes the bytes the unpickler reads, so a checksum covers exactly what was loaded."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def _seen(self, data):
        self.h.update(data)
        return data

    def read(self, n=-1):
        return self._seen(self.f.read(n))

    def readline(self):
        return self._seen(self.f.readline())

    def readinto(self, buf):
        n = self.f.readinto(buf)
        self._seen(memoryview(buf)[:n])
        return n

    def hexdigest(self):
        while self.read(1 << 22):
            pass
        return self.h.hexdigest()


def _expected(path):
    """What a weights option should name, for the file it named that does not exist."""
    ext = os.path.splitext(path)[1]
    if ext == ".pdmodel":
        return "expected the released UFO checkpoint, allinone_vitlarge.pdmodel: give the path of your local copy"
    if ext in (".pdparams", ".pdopt"):
        return "expected a checkpoint prefix such as output/quickstart/latest, or its .pdparams"
    return "expected a .pdparams/.pdopt file, a checkpoint prefix or the released .pdmodel"


def load_state(path, what, numpy=False, sha256=None):
    """The dict a Paddle .pdparams/.pdopt holds, converted as paddle.load converts it (arrays to
    tensors; kept as numpy arrays with ``numpy=True``). ``what`` (e.g. Global.pretrained_model)
    heads every error. ``sha256``: the expected hash of the file; a mismatch raises ChecksumError."""
    try:
        f = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ConfigError(f"{what}: {path} not found ({_expected(path)})") from None
    with f:
        reader = _HashingReader(f) if sha256 is not None else f
        try:
            obj = RestrictedUnpickler(reader, encoding="latin1").load()
        except RefusedPickle as e:
            raise ConfigError(f"{what}: {path}: refused: {e} (a Paddle weights file holds only "
                              f"arrays, numbers and strings)") from None
        except (pickle.UnpicklingError, *UNPICKLE_ERRORS) as e:
            raise ConfigError(f"{what}: {path}: not a readable Paddle weights file (truncated, or "
                              f"not written by paddle.save?): {type(e).__name__}: {e}") from None
        if sha256 is not None and reader.hexdigest() != sha256:
            raise ChecksumError(f"{what}: {path}: sha256 {reader.h.hexdigest()[:12]}... differs "
                                f"from the recorded {sha256[:12]}...")
    if not isinstance(obj, dict):
        raise ConfigError(f"{what}: {path}: holds a {type(obj).__name__}; expected a dict of "
                          f"arrays (a state_dict saved with paddle.save)")
    return _to_paddle(_join_big(obj), numpy)


def _join_big(state):
    """Tensors over 1 GB that paddle.save split into slices (pickle protocol 2/3)."""
    info = state.pop("UnpackBigParamInfor@@", None)  # sic, Paddle's key
    for key, v in (info or {}).items():
        state[key] = np.concatenate([state.pop(p) for p in v["slices"]]).reshape(v["OriginShape"])
    return state


def _is_named(x):
    return type(x) is tuple and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], np.ndarray)


def _walk(obj, match, fn):
    if match(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _walk(v, match, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_walk(v, match, fn) for v in obj)
    return obj


def _contains(obj, match):
    if match(obj):
        return True
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return any(_contains(v, match) for v in values)


def _to_paddle(state, numpy):
    """As paddle.load: a layer state_dict (arrays plus a name table) gets tensors named from
    the table; otherwise (name, array) tuples become named tensors, or, if there are none,
    every array becomes a tensor."""
    def tensor(arr, name=None):
        if numpy:
            return arr
        t = paddle.to_tensor(arr)
        if name:
            t.name = name
        return t
    table = state.pop("StructuredToParameterName@@", None)
    if isinstance(table, dict):
        return type(state)((k, tensor(v, table.get(k)) if isinstance(v, np.ndarray) else v)
                           for k, v in state.items())
    if _contains(state, _is_named):
        return _walk(state, _is_named, lambda x: tensor(x[1], x[0]))
    return _walk(state, lambda x: isinstance(x, np.ndarray), tensor)
