"""The ASMK codebook of MUSt3R's retrieval head: a pickle, read without ever unpickling arbitrary objects.

The published ``*_retrieval_codebook.pkl`` is a plain pickle (numpy arrays in dicts), and a pickle can run any
callable it names. :class:`ArrayUnpickler` resolves only the few numpy functions that rebuild arrays and
dtypes (refusing object dtypes) and nothing else, so a crafted file fails with a sentence before anything runs.
The centroids are then converted once to an ``.npz`` beside the pickle (written atomically) and read from it
afterwards with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from panst3r_engine.errors import PanSt3RError

log = logging.getLogger(__name__)

MAX_CODEBOOK_BYTES = 2 << 30  # 2 GiB: 2^18 centroids of 1024 float32 with room to spare
CENTROIDS = "centroids"

if np.lib.NumpyVersion(np.__version__) >= "2.0.0":  # numpy 2 renamed numpy.core to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
else:
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class CodebookError(PanSt3RError):
    """A codebook that cannot be used, with a sentence saying what to do."""

    code = "weights"


class _Refused(pickle.UnpicklingError):
    """What the unpickler refuses (as opposed to a file that is merely cut short)."""


def _plain_dtype(*args) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing dtypes that hold Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused("an array of Python objects")
    return dtype


def _scalar(dtype: np.dtype, data: bytes | None = None):
    """A numpy scalar (e.g. a float32 parameter) from its dtype and bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused("a numpy scalar that is not a plain number")
    return _multiarray.scalar(dtype, data)


def _reconstruct(subtype, shape, dtype):
    """numpy's empty-array step of protocols 2 to 4 (``__setstate__`` then fills it from the file's bytes);
    anything but an empty plain ndarray would allocate what the file never paid for."""
    if subtype is not np.ndarray or not isinstance(shape, tuple) or int(np.prod(shape)) != 0:
        raise _Refused("an array built other than the way numpy writes one")
    return _multiarray._reconstruct(subtype, shape, dtype)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """How protocol 2 spells a ``bytes`` object (``_codecs.encode(text, 'latin1')``), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("an encoding call that is not the bytes of an array")
    return text.encode("latin1")


# (module, name) -> what it may resolve to; numpy 1 pickles say numpy.core, numpy 2 pickles numpy._core.
_ALLOWED = {}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct  # protocols 2 to 4
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _numeric._frombuffer  # protocol 5
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = _scalar
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _plain_dtype
_ALLOWED[("_codecs", "encode")] = _latin1


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"it names {module}.{name}, which a codebook never needs")
        return found

    def persistent_load(self, pid):
        raise _Refused("it refers to external objects")


def codebook_npz_path(pkl: Path) -> Path:
    """Where the converted centroids of ``pkl`` are kept: beside it, same stem, ``.npz``."""
    return pkl.with_suffix(".npz")


def read_codebook_pickle(path: str | os.PathLike, max_bytes: int = MAX_CODEBOOK_BYTES) -> np.ndarray:
    """The centroids [K, D] float32 of an ASMK codebook pickle (an array, or a dict with ``centroids``)."""
    path = Path(path)
    if not path.is_file():
        raise CodebookError(f"the retrieval codebook {path} does not exist; download it or name the right file")
    size = path.stat().st_size
    if size > max_bytes:
        raise CodebookError(
            f"the retrieval codebook {path} has {size} bytes, more than the {max_bytes} a codebook can need; "
            "download it again"
        )
    try:
        with open(path, "rb") as f:  # streamed: the arrays are the only large allocation
            if f.read(1) != b"\x80":
                raise CodebookError(f"{path} is not a pickled codebook (not a pickle); download it again")
            f.seek(0)
            obj = ArrayUnpickler(f).load()
    except _Refused as exc:
        raise CodebookError(f"refusing to read the retrieval codebook {path}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError, AttributeError, MemoryError) as exc:
        raise CodebookError(f"the retrieval codebook {path} is truncated or corrupt ({exc}); download again") from exc
    return _centroids(obj, path)


def _centroids(obj, path: Path) -> np.ndarray:
    """The 2-D float centroid array inside what the pickle held (asmk writes ``{'params', 'centroids'}``)."""
    if isinstance(obj, dict):
        size = obj.get("params", {}).get("size") if isinstance(obj.get("params"), dict) else None
        obj = obj.get(CENTROIDS)
    else:
        size = None
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or obj.dtype.kind != "f" or 0 in obj.shape:
        raise CodebookError(
            f"{path} holds no codebook (expected a 2-D float array of centroids, alone or under 'centroids'); "
            "download it again"
        )
    if size is not None and size != len(obj):
        raise CodebookError(f"{path} declares {size} centroids but holds {len(obj)}; download it again")
    if not np.isfinite(obj).all():
        raise CodebookError(f"{path} has centroids that are not finite numbers; download it again")
    return np.ascontiguousarray(obj, dtype=np.float32)


def _write_npz_atomic(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_codebook(pkl: str | os.PathLike) -> np.ndarray:
    """The centroids of ``pkl``, from its ``.npz`` conversion when that matches the pickle's size and time;
    the conversion is made (once, atomically) when missing or stale, and skipped when the folder is read-only."""
    pkl = Path(pkl)
    if not pkl.is_file():
        raise CodebookError(f"the retrieval codebook {pkl} does not exist; download it or name the right file")
    stamp = np.array([pkl.stat().st_size, pkl.stat().st_mtime_ns], dtype=np.int64)
    npz, ours = codebook_npz_path(pkl), True
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as f:
                ours = "source" in f.files  # a file we did not write is never replaced
                if ours and np.array_equal(f["source"], stamp):
                    return _centroids(f[CENTROIDS], npz)
        except (OSError, ValueError, KeyError, CodebookError) as exc:
            ours = False
            log.warning("%s could not be used (%s)", npz, exc)
    centroids = read_codebook_pickle(pkl)
    if not ours:
        log.warning("%s is not this engine's conversion, so it is left alone; the codebook is read each time", npz)
        return centroids
    try:
        _write_npz_atomic(npz, centroids=centroids, source=stamp)
    except OSError as exc:
        log.warning("could not keep the converted codebook at %s (%s); it is converted again next time", npz, exc)
    return centroids


def write_codebook_pickle(path: str | os.PathLike, centroids: np.ndarray, protocol: int = 4) -> Path:
    """Write ``centroids`` as asmk does (``{'params': {'size'}, 'centroids'}``), atomically: for tests and mirrors."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        pickle.dump({"params": {"size": len(centroids)}, CENTROIDS: np.asarray(centroids)}, f, protocol=protocol)
    os.replace(tmp, path)
    return path
