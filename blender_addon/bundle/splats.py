"""The bundle's optional ``splats.ply`` (INRIA 3DGS layout + ``segment``, ``class``) -> activated arrays. No bpy.

Binary PLY with one ``vertex`` element of fixed-size properties (the engine's
``panst3r_engine/splats/export.py`` writes it). The file stores raw values; this
reader activates them the way a 3DGS rasteriser does: standard deviations are
``exp`` of the stored log-scales, opacity the sigmoid of the stored logit,
rotations the normalised ``rot_0..3`` (w, x, y, z) quaternions and the colour the
DC spherical-harmonic term, ``0.5 + C0 * f_dc`` clamped to 0-1 (view-dependent
``f_rest`` terms are not read). Everything stays in the engine's world frame;
``importers/convert.py`` moves it into Blender's. Property names, types and
the header limit come from ``_spec`` (the engine's contract, vendored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._spec import PLY_MAX_HEADER, PLY_REQUIRED, PLY_TYPES, SH_C0, bundle_path
from .read import BundleError


def _checked(path: Path) -> Path:
    """The file itself, refused when it is a link (it could point anywhere) or not a regular file."""
    try:
        found = bundle_path(path.parent, path.name)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if found is None:
        raise BundleError(f"{path} does not exist; run the job with splats enabled")
    return found


def _header(path: Path) -> tuple[int, np.dtype, int]:
    """(vertex count, vertex dtype, byte offset of the vertex data)."""
    elements: list[tuple[str, int, list]] = []
    endian = None
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise BundleError(f"{path} is not a PLY file")
        while True:
            line = fh.readline()
            if not line or fh.tell() > PLY_MAX_HEADER:
                raise BundleError(f"{path} has no end of PLY header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                offset = fh.tell()
                break
            if words[0] == "format":
                endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1] if len(words) > 1 else "")
                if endian is None:
                    raise BundleError(f"{path} must be a binary PLY file")
            elif endian is None:
                raise BundleError(f"{path} does not give its PLY format before its elements; it is corrupt")
            elif words[0] == "element" and len(words) == 3 and words[2].isdecimal():
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements and len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
            else:
                raise BundleError(f"{path} has an unsupported PLY header line {line.strip()[:60]!r}")
    if endian is None:
        raise BundleError(f"{path} must be a binary PLY file")
    return _vertex_layout(path, elements, endian, offset)


def _vertex_layout(
    path: Path, elements: list[tuple[str, int, list]], endian: str, offset: int
) -> tuple[int, np.dtype, int]:
    """(count, dtype, byte offset) of the vertex element, skipping the elements stored before it."""
    for name, count, props in elements:
        if len({prop for prop, _ in props}) != len(props):
            raise BundleError(f"{path} names a PLY property twice in element {name!r}; it is corrupt")
        dtype = np.dtype([(prop, endian + kind) for prop, kind in props])
        if name == "vertex":
            return count, dtype, offset
        offset += count * dtype.itemsize
    raise BundleError(f"{path} has no vertex element")


def normalise_quaternions(quats: np.ndarray) -> np.ndarray:
    """float [N, 4] (w, x, y, z) -> unit float64 [N, 4] with w >= 0; a zero quaternion becomes the identity."""
    quats = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    out = np.where(norm > 1e-12, quats / np.where(norm > 1e-12, norm, 1.0), [1.0, 0.0, 0.0, 0.0])
    return np.where(out[:, :1] < 0, -out, out)  # q and -q are the same rotation


def read_splats(path: str | Path) -> dict[str, np.ndarray]:
    """The Gaussians of a splats PLY, activated, in the engine's world frame.

    Returns:
        ``xyz`` float32 [N, 3]; ``scale`` float32 [N, 3] standard deviations (exp of the log-scales, engine
        units); ``rotation`` float32 [N, 4] unit quaternions (w, x, y, z), local -> world; ``opacity`` float32
        [N] (0-1); ``rgb`` float32 [N, 3] (0-1, sRGB, the DC term); ``segment`` int32 [N] (0 when absent);
        ``class`` int32 [N] (-1 when absent).
    """
    path = _checked(Path(path))
    count, dtype, offset = _header(path)
    missing = [name for name in PLY_REQUIRED if name not in dtype.names]
    if missing:
        raise BundleError(f"{path} is not a Gaussian splat PLY: it lacks {', '.join(missing)}")
    present = max(path.stat().st_size - offset, 0) // dtype.itemsize
    if present < count:  # decided before np.fromfile allocates the declared count
        raise BundleError(f"{path} is truncated: {present} of {count} Gaussians present; run the job again")
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)

    def columns(*names: str) -> np.ndarray:
        return np.stack([data[name].astype(np.float64) for name in names], axis=1)

    def labels(name: str, default: int) -> np.ndarray:
        return data[name].astype(np.int32) if name in dtype.names else np.full(count, default, np.int32)

    with np.errstate(over="ignore"):  # exp of a huge logit: sigmoid 0 or 1, as intended
        opacity = 1.0 / (1.0 + np.exp(-data["opacity"].astype(np.float64)))
        scale = np.exp(columns("scale_0", "scale_1", "scale_2"))
    return {
        "xyz": columns("x", "y", "z").astype(np.float32),
        "scale": scale.astype(np.float32),
        "rotation": normalise_quaternions(columns("rot_0", "rot_1", "rot_2", "rot_3")).astype(np.float32),
        "opacity": opacity.astype(np.float32),
        "rgb": np.clip(0.5 + SH_C0 * columns("f_dc_0", "f_dc_1", "f_dc_2"), 0.0, 1.0).astype(np.float32),
        "segment": labels("segment", 0),
        "class": labels("class", -1),
    }
