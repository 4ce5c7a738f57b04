"""``splats.ply``: the INRIA 3DGS PLY layout plus per-Gaussian ``segment`` and ``class`` (DESIGN §3).

Binary little-endian, one ``vertex`` element: ``x y z nx ny nz f_dc_0..2 f_rest_0..3K-1 opacity scale_0..2
rot_0..3`` as float32 (raw values: logit opacity, log scales, wxyz quaternion; ``f_rest`` channel-major, all R
coefficients then G then B; normals written as 0), then ``segment`` and ``class`` as int32. gsplat's
``export_splats`` cannot add properties, hence this writer. The fitted background colour travels in a
``comment background r g b`` header line, which viewers ignore.

The reader also takes plain INRIA or gsplat files (no normals, no labels: segment 0, class -1) and any fixed-size
scalar types, converting to float32 / int32. Names, types and limits come from the bundle's contract,
:mod:`panst3r_engine.bundle.spec`, which the add-on's reader shares.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import numpy as np
import torch

from panst3r_engine.bundle.spec import (
    PLY_INT_PROPERTIES,
    PLY_MAX_HEADER,
    PLY_REQUIRED,
    PLY_TYPES,
    ply_property_names,
)
from panst3r_engine.errors import PanSt3RError
from panst3r_engine.splats.model import SplatModel, sh_degree_of

property_names = ply_property_names  # the name this module used before the contract moved to bundle/spec.py


class SplatsFileError(PanSt3RError):
    """A splats PLY that cannot be read, with a sentence saying why."""

    code = "bundle"


def _to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=False)


def splats_to_array(model: SplatModel) -> np.ndarray:
    """The structured vertex array (one record per Gaussian) of the file."""
    n, k = len(model), model.shN.shape[1]
    names = ply_property_names(3 * k)
    dtype = np.dtype([(name, "<i4" if name in PLY_INT_PROPERTIES else "<f4") for name in names])
    rec = np.zeros(n, dtype)
    cols = {
        "x": model.means[:, 0],
        "y": model.means[:, 1],
        "z": model.means[:, 2],
        "opacity": model.opacities,
        "segment": model.segment,
        "class": model.class_id,
    }
    cols.update({f"f_dc_{c}": model.sh0[:, 0, c] for c in range(3)})
    rest = model.shN.transpose(1, 2).reshape(n, 3 * k)  # [N, 3K] channel-major
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(3 * k)})
    cols.update({f"scale_{i}": model.scales[:, i] for i in range(3)})
    cols.update({f"rot_{i}": model.quats[:, i] for i in range(4)})
    for name, values in cols.items():
        rec[name] = _to_numpy(values, dtype[name].str)
    return rec


def write_splats_ply(model: SplatModel, path: str | os.PathLike, atomic: bool = True) -> Path:
    """Write ``model`` to ``path``; atomically (a sibling temp file renamed into place) unless ``atomic`` is
    False, for a folder nobody reads yet (a job's staging folder)."""
    path = Path(path)
    rec = splats_to_array(model)
    bg = " ".join(repr(float(v)) for v in _to_numpy(model.background, "<f4"))
    header = ["ply", "format binary_little_endian 1.0", f"comment background {bg}", f"element vertex {len(rec)}"]
    header += [f"property {'int' if rec.dtype[name].kind == 'i' else 'float'} {name}" for name in rec.dtype.names]
    header.append("end_header")
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}") if atomic else path
    try:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(rec.tobytes())
        if atomic:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _parse_header(fh) -> tuple[list[tuple[str, int, np.dtype]], list[str], int]:
    """(elements [(name, count, dtype)], comments, header bytes); only fixed-size binary properties."""
    if fh.readline().strip() != b"ply":
        raise SplatsFileError("not a PLY file (it does not start with 'ply')")
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    comments: list[str] = []
    endian = None
    while True:
        line = fh.readline()
        if not line or fh.tell() > PLY_MAX_HEADER:
            raise SplatsFileError("the PLY header has no end_header line")
        words = line.decode("ascii", "replace").split()
        if not words:
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
            endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
            if endian is None:
                raise SplatsFileError(f"PLY format {fmt!r} is not supported; splats must be binary PLY")
        elif words[0] in ("comment", "obj_info"):
            comments.append(" ".join(words[1:]))
        elif endian is None:
            raise SplatsFileError("the PLY header does not give its format before its elements; the file is corrupt")
        elif words[0] == "element" and len(words) == 3 and words[2].isdecimal():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if len(words) != 3 or words[1] not in PLY_TYPES:
                raise SplatsFileError(f"PLY property {' '.join(words[1:])!r} is not supported in a splats file")
            elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
        else:
            raise SplatsFileError(f"unexpected PLY header line {line.strip()[:80]!r}")
    if endian is None:
        raise SplatsFileError("the PLY header has no format line")
    for name, _, props in elements:
        if len({prop for prop, _ in props}) != len(props):
            raise SplatsFileError(f"the PLY header names a property twice in element {name!r}")
    return (
        [(name, count, np.dtype([(prop, endian + kind) for prop, kind in props])) for name, count, props in elements],
        comments,
        fh.tell(),
    )


def read_splats_array(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(the vertex records as stored, header comments)."""
    with open(path, "rb") as fh:
        elements, comments, offset = _parse_header(fh)
    size = os.path.getsize(path)
    for name, count, dtype in elements:
        if name == "vertex":
            if offset + count * dtype.itemsize > size:  # decided before np.fromfile reserves count records
                raise SplatsFileError(
                    f"{path} is truncated: it declares {count} Gaussians but holds "
                    f"{max(size - offset, 0) // dtype.itemsize}"
                )
            data = np.fromfile(path, dtype=dtype, count=count, offset=offset)
            if len(data) != count:
                raise SplatsFileError(f"{path} is truncated: {len(data)} of {count} Gaussians present")
            return data, comments
        offset += count * dtype.itemsize
    raise SplatsFileError(f"{path} has no 'vertex' element")


def read_splats_ply(path: str | os.PathLike) -> SplatModel:
    """Read a splats PLY (ours, INRIA's or gsplat's) into a CPU :class:`SplatModel`."""
    rec, comments = read_splats_array(path)
    names = rec.dtype.names or ()
    missing = [name for name in PLY_REQUIRED if name not in names]
    if missing:
        raise SplatsFileError(f"{path} is not a 3D Gaussian splat PLY: it lacks {', '.join(missing)}")
    rest = sorted((n for n in names if re.fullmatch(r"f_rest_\d+", n)), key=lambda n: int(n[7:]))
    if rest != [f"f_rest_{i}" for i in range(len(rest))] or len(rest) % 3:
        raise SplatsFileError(f"{path} has f_rest properties that are not f_rest_0..f_rest_(3K-1)")
    try:
        sh_degree_of(len(rest) // 3)
    except ValueError as exc:
        raise SplatsFileError(f"{path}: {exc}") from None

    def col(*keys: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([rec[k].astype("<f4") for k in keys], -1).reshape(len(rec), len(keys)))

    n, k = len(rec), len(rest) // 3
    background = torch.zeros(3)
    for comment in comments:
        words = comment.split()
        if len(words) == 4 and words[0] == "background":
            background = torch.from_numpy(np.array([float(w) for w in words[1:]], "<f4"))
    labels = {
        key: torch.from_numpy(rec[key].astype("<i4")) if key in names else torch.full((n,), default, dtype=torch.int32)
        for key, default in (("segment", 0), ("class", -1))
    }
    return SplatModel(
        means=col("x", "y", "z"),
        scales=col("scale_0", "scale_1", "scale_2"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        opacities=col("opacity")[:, 0].contiguous(),
        sh0=col("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :].contiguous(),
        shN=col(*rest).reshape(n, 3, k).transpose(1, 2).contiguous() if k else torch.zeros(n, 0, 3),
        segment=labels["segment"],
        class_id=labels["class"],
        background=background,
    )
