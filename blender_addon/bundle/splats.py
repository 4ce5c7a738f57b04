"""The bundle's optional ``splats.ply`` (INRIA 3DGS layout + ``segment``, ``class``) -> display arrays. No bpy.

Binary PLY with one ``vertex`` element of fixed-size properties. Only what the
add-on shows is derived: centre, colour of the DC spherical-harmonic term
(``0.5 + C0 * f_dc``), opacity (sigmoid of the stored logit) and a radius (the
geometric mean of the stored log standard deviations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .read import BundleError

SH_C0 = 0.28209479177387814
PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2")


def _header(path: Path) -> tuple[int, np.dtype, int]:
    """(vertex count, vertex dtype, byte offset of the vertex data)."""
    elements: list[tuple[str, int, list]] = []
    endian = None
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise BundleError(f"{path} is not a PLY file")
        while True:
            line = fh.readline()
            if not line or fh.tell() > 1 << 20:
                raise BundleError(f"{path} has no end of PLY header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                offset = fh.tell()
                break
            if words[0] == "format":
                endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1] if len(words) > 1 else "")
            elif words[0] == "element" and len(words) == 3:
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements and len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
            else:
                raise BundleError(f"{path} has an unsupported PLY header line {line.strip()[:60]!r}")
    if endian is None:
        raise BundleError(f"{path} must be a binary PLY file")
    for name, count, props in elements:
        dtype = np.dtype([(prop, endian + kind) for prop, kind in props])
        if name == "vertex":
            return count, dtype, offset
        offset += count * dtype.itemsize
    raise BundleError(f"{path} has no vertex element")


def read_splats(path: str | Path) -> dict[str, np.ndarray]:
    """Display arrays of a splats PLY.

    Returns:
        ``xyz`` float32 [N, 3] (engine world), ``rgb`` float32 [N, 3] (0-1, sRGB), ``opacity`` float32 [N],
        ``radius`` float32 [N] (engine units), ``segment`` int32 [N] (0 when absent), ``class`` int32 [N]
        (-1 when absent).
    """
    path = Path(path)
    count, dtype, offset = _header(path)
    missing = [name for name in REQUIRED if name not in dtype.names]
    if missing:
        raise BundleError(f"{path} lacks the Gaussian properties {', '.join(missing)}")
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if len(data) != count:
        raise BundleError(f"{path} is truncated: {len(data)} of {count} Gaussians present; run the job again")

    def column(name: str, default: float | None = None) -> np.ndarray:
        if name in dtype.names:
            return data[name].astype(np.float64)
        return np.full(count, default, np.float64)

    rgb = np.stack([0.5 + SH_C0 * column(f"f_dc_{c}") for c in range(3)], axis=1)
    log_scale = np.stack([column(f"scale_{i}") for i in range(3)], axis=1)
    return {"xyz": np.stack([column(a) for a in "xyz"], axis=1).astype(np.float32),
            "rgb": np.clip(rgb, 0.0, 1.0).astype(np.float32),
            "opacity": (1.0 / (1.0 + np.exp(-column("opacity")))).astype(np.float32),
            "radius": np.exp(log_scale.mean(axis=1)).astype(np.float32),
            "segment": column("segment", 0).astype(np.int32),
            "class": column("class", -1).astype(np.int32)}
