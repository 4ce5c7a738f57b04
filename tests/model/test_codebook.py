"""The retrieval codebook pickle: genuine numpy pickles convert and round-trip; anything that would run code,
allocate what the file never paid for, or is cut short is refused with a sentence, and nothing executes."""

from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from panst3r_engine.model.codebook import (
    CodebookError,
    codebook_npz_path,
    load_codebook,
    read_codebook_pickle,
    write_codebook_pickle,
)

CENTROIDS = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)


class _Reduce:
    """An object whose unpickling calls ``func(*args)``: what a crafted codebook would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_round_trip_in_every_protocol(tmp_path, protocol):
    state = {"params": {"size": 7, "scale": np.float32(0.5)}, "centroids": CENTROIDS, "ids": np.arange(3)}
    path = tmp_path / "c.pkl"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    got = read_codebook_pickle(path)
    assert got.dtype == np.float32 and np.array_equal(got, CENTROIDS)


def test_a_bare_array_and_numpy_2_spellings_are_read(tmp_path):
    (tmp_path / "bare.pkl").write_bytes(pickle.dumps(CENTROIDS.astype(np.float64), protocol=2))
    assert np.allclose(read_codebook_pickle(tmp_path / "bare.pkl"), CENTROIDS)
    # numpy 2 writes numpy._core where numpy 1 wrote numpy.core; the same bytes otherwise.
    data = pickle.dumps({"centroids": CENTROIDS}, protocol=2)
    other = (
        data.replace(b"numpy.core", b"numpy._core")
        if b"numpy.core" in data
        else data.replace(b"numpy._core", b"numpy.core")
    )
    assert other != data
    (tmp_path / "other.pkl").write_bytes(other)
    assert np.array_equal(read_codebook_pickle(tmp_path / "other.pkl"), CENTROIDS)


@pytest.mark.parametrize(
    "payload",
    [
        lambda marker: _Reduce(os.system, f"touch {marker}"),
        lambda marker: _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        lambda marker: _Reduce(subprocess.call, ["touch", str(marker)]),
        lambda marker: {"centroids": CENTROIDS, "hook": _Reduce(exec, f"open({str(marker)!r}, 'w').close()")},
    ],
    ids=["os.system", "builtins.eval", "subprocess.call", "exec-inside-a-dict"],
)
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "evil_codebook.pkl"
    path.write_bytes(pickle.dumps(payload(marker), protocol=4))
    with pytest.raises(CodebookError, match="refusing to read the retrieval codebook .* which a codebook never needs"):
        load_codebook(path)
    assert not marker.exists() and not codebook_npz_path(path).exists()


def test_object_arrays_and_allocation_bombs_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))
    with pytest.raises(CodebookError, match="an array of Python objects"):
        read_codebook_pickle(path)
    # numpy's own _reconstruct asked for 10^12 elements up front: a tiny file that would allocate a terabyte.
    from panst3r_engine.model.codebook import _multiarray

    bomb = _Reduce(_multiarray._reconstruct, np.ndarray, (10**12,), b"b")
    path.write_bytes(pickle.dumps(bomb, protocol=2))
    with pytest.raises(CodebookError, match="other than the way numpy writes one"):
        read_codebook_pickle(path)


def test_truncated_oversized_and_foreign_files_are_refused(tmp_path):
    good = write_codebook_pickle(tmp_path / "good.pkl", CENTROIDS)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CodebookError, match="truncated or corrupt.*download again"):
        read_codebook_pickle(cut)
    with pytest.raises(CodebookError, match="more than the 100 a codebook can need"):
        read_codebook_pickle(good, max_bytes=100)
    (tmp_path / "text.pkl").write_text("centroids")
    with pytest.raises(CodebookError, match="not a pickled codebook"):
        read_codebook_pickle(tmp_path / "text.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CodebookError, match="holds no codebook"):
        read_codebook_pickle(tmp_path / "list.pkl")
    with pytest.raises(CodebookError, match="does not exist"):
        load_codebook(tmp_path / "missing.pkl")


def test_conversion_is_made_once_and_redone_when_the_pickle_changes(tmp_path):
    pkl = write_codebook_pickle(tmp_path / "MUSt3R_512_retrieval_codebook.pkl", CENTROIDS)
    assert np.array_equal(load_codebook(pkl), CENTROIDS)
    npz = codebook_npz_path(pkl)
    assert npz.name == "MUSt3R_512_retrieval_codebook.npz" and npz.is_file()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    # Same size and time, unreadable bytes: the .npz answers, so the pickle is not read again.
    stat = pkl.stat()
    pkl.write_bytes(b"\x00" * stat.st_size)
    os.utime(pkl, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert np.array_equal(load_codebook(pkl), CENTROIDS)
    # A new pickle (another time) is converted again.
    write_codebook_pickle(pkl, CENTROIDS[:3])
    os.utime(pkl, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert np.array_equal(load_codebook(pkl), CENTROIDS[:3])


def test_an_npz_the_engine_did_not_write_is_left_alone(tmp_path):
    pkl = write_codebook_pickle(tmp_path / "x_codebook.pkl", CENTROIDS)
    mine = codebook_npz_path(pkl)
    np.savez(mine, centroids=np.zeros((2, 2)))  # the user's own file, by chance of the same name
    before = mine.read_bytes()
    assert np.array_equal(load_codebook(pkl), CENTROIDS) and mine.read_bytes() == before
