"""The result bundle's contract, format 1.x: names, dtypes, encodings and the job's stage list.

This module is the one place both sides learn the format from. It imports only
the standard library and ``numpy``, so ``build.py`` copies it byte for byte into the Blender
add-on (``blender_addon/bundle/_spec.py``); a test checks the copy. Validation
lives with each reader (the engine's ``bundle/checks.py``, the add-on's
``bundle/read.py``): a reader raises its own error type, so the functions here
return ``None`` instead of raising. The README's "Result bundle" section
documents every field.

A bundle is a folder:

- ``manifest.json``: UTF-8 JSON (no NaN/Infinity) with ``format_version``,
  ``engine``, ``model``, ``options``, ``timings``, ``created``, ``images``,
  ``cameras``, ``classes``, ``segments``, ``panoptic`` and, when splats were
  fitted, ``splats``.
- ``points.npz``: the arrays of :data:`POINT_ARRAYS`, all of length N.
- ``panoptic/<stem>.png``: COCO-panoptic ids (:func:`encode_panoptic`).
- ``images/<stem>.jpg``: the processed photo (:func:`image_file`).
- ``splats.ply`` (optional): 3D Gaussians, :data:`PLY_PROPERTIES` + f_rest.
- ``raw.npz`` (optional): raw network outputs (``run --save-raw``).

Frames: OpenCV camera axes (x right, y down, z forward); world = the first
keyframe's camera. ``K`` is in processed-image pixels with the *continuous*
pixel convention: pixel (col, row) covers [col, col+1) x [row, row+1), its
centre is at (col + 0.5, row + 0.5) and the image centre is (W/2, H/2). The
add-on, the splat rasteriser and the ground-truth bundles all read ``K`` so.
(The engine estimates the focal as MUSt3R does, against integer pixel indices
with the principal point at (W/2, H/2); the half-pixel difference is far below
the estimate's accuracy.) ``pixel`` stores integer (col, row) indices.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT_VERSION = "1.0"
FORMAT_MAJOR = 1
MAX_SEGMENT_ID = 2**24 - 1  # the largest id the RGB panoptic encoding can hold

MANIFEST = "manifest.json"
POINTS = "points.npz"
IMAGES_DIR = "images"
PANOPTIC_DIR = "panoptic"
SPLATS_FILE = "splats.ply"
RAW_FILE = "raw.npz"
RESERVED_NAMES = frozenset({MANIFEST, POINTS, IMAGES_DIR, PANOPTIC_DIR})
OPTIONAL_FILES = (SPLATS_FILE, RAW_FILE)
# Image stems name files (images/<stem>.jpg, panoptic/<stem>.png): see is_safe_stem
STEM_PATTERN = re.compile(r"\w[\w.\-]{0,127}")
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)

# Limits a reader checks before it allocates: a bundle comes from outside.
MAX_MANIFEST_BYTES = 64 << 20
MAX_JSON_DEPTH = 64  # the format nests 4 deep; options may add a little
MAX_IMAGE_PIXELS = 1 << 26  # per processed image (8192 x 8192)
NPZ_MEMBER_TYPES = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what numpy writes

# points.npz: name -> (dtype, per-point shape)
POINT_ARRAYS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "xyz": (np.dtype(np.float32), (3,)),  # world coordinates
    "rgb": (np.dtype(np.uint8), (3,)),  # photo colour
    "conf": (np.dtype(np.float32), ()),  # 1 + exp(c), >= the job's conf_threshold
    "segment": (np.dtype(np.int32), ()),  # segment id, 0 = unlabelled
    "view": (np.dtype(np.int16), ()),  # image index
    "pixel": (np.dtype(np.uint16), (2,)),  # (col, row) in the processed image
}

# splats.ply: binary little-endian, one ``vertex`` element. Order in the file:
# PLY_LEADING, f_rest_0 .. f_rest_{3K-1} (channel-major), PLY_TRAILING.
PLY_LEADING = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
PLY_TRAILING = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "segment", "class")
PLY_INT_PROPERTIES = ("segment", "class")  # int32; every other property is float32
PLY_REQUIRED = (
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
POINT_BYTES = sum(dtype.itemsize * math.prod(tail) for dtype, tail in POINT_ARRAYS.values())

PLY_MAX_HEADER = 1 << 20
SH_C0 = 0.28209479177387814  # degree-0 spherical-harmonic constant: rgb = 0.5 + SH_C0 * f_dc

# The job's stages, in the order the engine emits them. Progress clients map
# (stage, fraction) to an overall fraction with :func:`overall_progress`.
STAGES = (
    "load_images",
    "load_model",
    "vocabulary",
    "encode",
    "memory",
    "render_keyframes",
    "decode_keyframes",
    "render_views",
    "postprocess",
    "cameras",
    "splats",
    "write_bundle",
)


def ply_property_names(num_rest: int) -> list[str]:
    """Vertex property names in file order for ``num_rest`` f_rest values (3 * K)."""
    return [*PLY_LEADING, *(f"f_rest_{i}" for i in range(num_rest)), *PLY_TRAILING]


def is_safe_stem(stem: object) -> bool:
    """Whether a received stem is a plain file name on Linux, macOS and Windows (so paths can be built from it).

    Letters, digits, '_', '-' and '.', at most 128 characters, not starting with '.' or '-', not ending with
    '.', not a reserved Windows device name.
    """
    return (
        isinstance(stem, str)
        and STEM_PATTERN.fullmatch(stem) is not None
        and not stem.endswith(".")
        and stem.split(".")[0].upper() not in WINDOWS_RESERVED
    )


def image_file(stem: str) -> str:
    """Bundle-relative path of an image's processed photo."""
    return f"{IMAGES_DIR}/{stem}.jpg"


def panoptic_file(stem: str) -> str:
    """Bundle-relative path of an image's panoptic map."""
    return f"{PANOPTIC_DIR}/{stem}.png"


def encode_panoptic(ids: np.ndarray) -> np.ndarray:
    """int [H, W] segment ids -> uint8 [H, W, 3] with id = R + 256 G + 65536 B (COCO panoptic)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def decode_panoptic(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> int32 [H, W] ids (inverse of :func:`encode_panoptic`)."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def parse_version(version: object) -> tuple[int, int] | None:
    """'1.0' -> (1, 0); None when it is not of the form 'MAJOR.MINOR'."""
    match = re.fullmatch(r"(\d{1,6})\.(\d{1,6})", version) if isinstance(version, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def overall_progress(stage: str | None, fraction: float, stages: tuple[str, ...] = STAGES) -> float:
    """A job's overall fraction in [0, 1] from its current stage; unknown stages give 0."""
    if stage not in stages:
        return 0.0
    return (stages.index(stage) + max(0.0, min(1.0, float(fraction)))) / len(stages)


# ---------------------------------------------------------------- reading untrusted files
# Windows reparse tags of symbolic links and junctions (IO_REPARSE_TAG_SYMLINK, _MOUNT_POINT; stat has them on
# Windows only); other reparse points, such as OneDrive placeholders, are plain files
_LINK_TAGS = (0xA000000C, 0xA0000003)


def bundle_path(root: str | os.PathLike, relative: str) -> Path | None:
    """``root/relative`` if it is a regular file reached without links; None when absent.

    A received bundle could hold a symbolic link (or a Windows junction) pointing anywhere; following it would
    make a reader open, and the add-on import, files outside the bundle. Raises ValueError with a sentence.
    """
    parts = relative.split("/")
    if os.path.isabs(relative) or any(p in ("", ".", "..") or "\\" in p or ":" in p for p in parts):
        raise ValueError(f"{relative!r} is not a path inside the bundle")
    path = Path(root)
    for i, part in enumerate(parts):
        path = path / part
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ValueError(f"cannot read {path} ({exc.strerror or exc})") from None
        if stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", 0) in _LINK_TAGS:
            raise ValueError(f"{path} is a link; a bundle must hold its own files, so replace the link by a copy")
        if not (stat.S_ISREG if i == len(parts) - 1 else stat.S_ISDIR)(info.st_mode):
            raise ValueError(f"{path} is not a regular {'file' if i == len(parts) - 1 else 'folder'}")
    return path


def read_limited(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a file, refused (ValueError) above ``max_bytes`` before they are read."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(size + 1) if size <= max_bytes else b""  # read(n) reserves n bytes: ask for what is there
    if size > max_bytes or len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes >> 20} MiB, far more than the format needs")
    return data


def load_json(data: bytes, name: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Parse UTF-8 JSON, refusing (ValueError) nesting deeper than ``max_depth``.

    Deep nesting would otherwise surface as a RecursionError here or in whatever walks the value later.
    """
    too_deep = f"{name} nests JSON deeper than {max_depth} levels, which the format never does"
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(too_deep) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} is not valid JSON in UTF-8 ({exc})") from None
    if _nesting_depth(data) > max_depth:
        raise ValueError(too_deep)
    return value


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def _nesting_depth(valid_json: bytes, chunk: int = 1 << 20) -> int:
    """Deepest nesting of ``[`` and ``{`` in valid JSON text, outside strings.

    A scan of the text (regular expressions, then numpy in chunks) instead of a walk of the parsed value: a
    manifest of 10,000 segments holds ~400,000 values, which a Python walk takes seconds over. Only valid
    JSON: its strings are all closed, so the string pattern runs in linear time.
    """
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", valid_json))
    deepest = depth = 0
    for start in range(0, len(brackets), chunk):
        part = np.frombuffer(brackets, np.uint8, count=min(chunk, len(brackets) - start), offset=start)
        levels = depth + np.cumsum(np.where((part == ord("[")) | (part == ord("{")), 1, -1))
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def points_byte_limit(pixels: int) -> int:
    """Most bytes a points.npz may inflate to: every pixel a point, twice over for future arrays, plus headers."""
    return 2 * POINT_BYTES * max(int(pixels), 0) + (1 << 20)


def read_npz(path: str | os.PathLike, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, each member's size and header checked before anything is inflated.

    ``np.load`` trusts the archive: a declared shape or a zip bomb allocates gigabytes before any check. Here
    the members' declared sizes must total at most ``max_bytes`` and agree with their .npy headers; pickled
    (object) arrays are refused. Raises ValueError with a sentence.
    """
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > max_bytes + (1 << 20):
                raise ValueError(f"{path} is larger than the {max_bytes} bytes its arrays may take")
            with zipfile.ZipFile(fh) as archive:
                infos = archive.infolist()
                if sum(info.file_size for info in infos) > max_bytes:
                    raise ValueError(f"{path} would inflate to more than the {max_bytes} bytes its arrays may take")
                return _npz_members(archive, infos, path)
    except (
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
    ) as exc:
        raise ValueError(f"{path} is not a readable .npz archive ({exc})") from None


def _npz_members(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], path: object) -> dict[str, np.ndarray]:
    out = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else ""
        if not key or key in out or info.compress_type not in NPZ_MEMBER_TYPES:
            raise ValueError(
                f"{path} has a member {info.filename[:60]!r} that is not a distinct, plainly stored .npy array"
            )
        with archive.open(info) as member:
            out[key] = _npy_member(member, info.file_size, f"{path} array {key[:60]!r}")
    return out


def _npy_member(member, size: int, name: str) -> np.ndarray:
    """One .npy stream of ``size`` bytes; the header is checked against the size before the data is read."""
    try:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
            version
        )
        if read_header is None:
            raise ValueError(f"format version {version}")
        shape, fortran_order, dtype = read_header(member)
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{name} has a malformed .npy header ({exc})") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"{name} holds Python objects or an empty dtype, which a bundle never stores")
    nbytes = math.prod(shape) * dtype.itemsize
    if member.tell() + nbytes != size:
        raise ValueError(f"{name} declares shape {shape} of {dtype.str}, which disagrees with its size of {size} bytes")
    buffer = bytearray(nbytes)
    if member.readinto(buffer) != nbytes:
        raise ValueError(f"{name} is truncated")
    return np.frombuffer(buffer, dtype).reshape(shape, order="F" if fortran_order else "C")
