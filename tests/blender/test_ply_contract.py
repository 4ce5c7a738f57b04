"""splats.ply from outside: the add-on's reader and the engine's refuse the same broken headers with a sentence.

Both readers take the PLY names and types from the bundle spec; each keeps its own error type (the add-on's
BundleError, the engine's SplatsFileError). Real files in a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle import _spec
from blender_addon.bundle.read import BundleError
from blender_addon.bundle.splats import read_splats

PROPERTIES = "".join(f"property float {name}\n" for name in _spec.PLY_REQUIRED)
BROKEN = {
    "a count that is not a number": f"format binary_little_endian 1.0\nelement vertex abc\n{PROPERTIES}",
    "a negative count": f"format binary_little_endian 1.0\nelement vertex -5\n{PROPERTIES}",
    "properties before the format line": f"element vertex 1\n{PROPERTIES}format binary_little_endian 1.0\n",
    "a property line without a name": f"format binary_little_endian 1.0\nelement vertex 1\nproperty\n{PROPERTIES}",
    "a property named twice": f"format binary_little_endian 1.0\nelement vertex 1\n{PROPERTIES}property float x\n",
    "an ASCII body": f"format ascii 1.0\nelement vertex 1\n{PROPERTIES}",
}


def _ply(tmp_path: Path, header: str, count: int = 1) -> Path:
    path = tmp_path / "splats.ply"
    body = np.zeros(count * len(_spec.PLY_REQUIRED), "<f4").tobytes()
    path.write_bytes(f"ply\n{header}end_header\n".encode("ascii") + body)
    return path


def test_both_readers_take_a_well_formed_header(tmp_path: Path) -> None:
    from panst3r_engine.splats.export import read_splats_ply

    path = _ply(tmp_path, f"format binary_little_endian 1.0\nelement vertex 2\n{PROPERTIES}", count=2)
    assert len(read_splats(path)["xyz"]) == len(read_splats_ply(path)) == 2


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_both_readers_refuse_a_broken_header(tmp_path: Path, case: str) -> None:
    from panst3r_engine.splats.export import SplatsFileError, read_splats_ply

    path = _ply(tmp_path, BROKEN[case])
    with pytest.raises(BundleError):
        read_splats(path)
    with pytest.raises(SplatsFileError):
        read_splats_ply(path)
