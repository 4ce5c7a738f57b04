"""The result bundle's contract, format 1.x: names, dtypes, encodings and the job's stage list.

This module is the one place both sides learn the format from. It imports only
``re`` and ``numpy``, so ``build.py`` copies it byte for byte into the Blender
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

import re

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
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})

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
PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3")
PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
PLY_MAX_HEADER = 1 << 20
SH_C0 = 0.28209479177387814  # degree-0 spherical-harmonic constant: rgb = 0.5 + SH_C0 * f_dc

# The job's stages, in the order the engine emits them. Progress clients map
# (stage, fraction) to an overall fraction with :func:`overall_progress`.
STAGES = ("load_images", "load_model", "vocabulary", "encode", "memory", "render_keyframes", "decode_keyframes",
          "render_views", "postprocess", "cameras", "splats", "write_bundle")


def ply_property_names(num_rest: int) -> list[str]:
    """Vertex property names in file order for ``num_rest`` f_rest values (3 * K)."""
    return [*PLY_LEADING, *(f"f_rest_{i}" for i in range(num_rest)), *PLY_TRAILING]


def is_safe_stem(stem: object) -> bool:
    """Whether a received stem is a plain file name on Linux, macOS and Windows (so paths can be built from it).

    Letters, digits, '_', '-' and '.', at most 128 characters, not starting with '.' or '-', not ending with
    '.', not a reserved Windows device name.
    """
    return (isinstance(stem, str) and STEM_PATTERN.fullmatch(stem) is not None and not stem.endswith(".")
            and stem.split(".")[0].upper() not in WINDOWS_RESERVED)


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
