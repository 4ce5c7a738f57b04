"""The add-on's own reader of the engine's result bundle, format 1.x (DESIGN.md §3).

manifest.json + points.npz (+ panoptic PNGs on demand) -> plain dataclasses and
numpy arrays. json + numpy only: no bpy, no Pillow, never the engine package.
Names, dtypes and encodings come from ``_spec`` (the engine's
``bundle/spec.py``, vendored by build.py); the checks stay here, because a
bundle comes from outside. Any 1.x version is read (unknown fields are
ignored); other major versions are refused with a sentence telling the user
what to update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._spec import (
    FORMAT_MAJOR,
    MANIFEST,
    MAX_IMAGE_PIXELS,
    MAX_MANIFEST_BYTES,
    POINT_ARRAYS,
    POINTS,
    SPLATS_FILE,
    bundle_path,
    decode_panoptic,
    image_file,
    is_safe_stem,
    load_json,
    panoptic_file,
    parse_version,
    points_byte_limit,
    read_limited,
    read_npz,
)
from .png import PngError, read_png

# dtype kinds accepted per target kind: integers may arrive signed or unsigned and are cast
ACCEPTED_KINDS = {"f": "f", "u": "u", "i": "iu"}


CORRUPT = "the bundle is corrupt, run the job again"


class BundleError(RuntimeError):
    """A result bundle the add-on cannot read, with a sentence a user can act on."""


def _file(root: Path, relative: str) -> Path | None:
    """A bundle file that is no link and stays inside the bundle (``_spec.bundle_path``), or None when absent."""
    try:
        return bundle_path(root, relative)
    except ValueError as exc:
        raise BundleError(str(exc)) from None


@dataclass(frozen=True)
class ImageInfo:
    index: int
    file: str
    stem: str
    processed_size: tuple[int, int]  # (W, H)
    keyframe: bool


@dataclass(frozen=True)
class CameraInfo:
    image: int
    stem: str
    K: np.ndarray  # [3, 3] in processed-image pixels
    cam_to_world: np.ndarray  # [4, 4], OpenCV axes (x right, y down, z forward)
    width: int
    height: int
    photo: Path | None  # images/<stem>.jpg when present


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]  # 0..255, sRGB
    isthing: bool


@dataclass(frozen=True)
class SegmentInfo:
    id: int
    class_id: int
    score: float
    color: tuple[int, int, int]
    point_count: int


@dataclass
class BundleData:
    """A bundle read from disk; panoptic maps are decoded on demand."""

    path: Path
    manifest: dict
    format_version: str
    images: list[ImageInfo]
    cameras: list[CameraInfo]  # one per image, in image order
    classes: dict[int, ClassInfo]
    segments: list[SegmentInfo]
    points: dict[str, np.ndarray] = field(repr=False)  # xyz [N,3] f32, rgb [N,3] u8, conf, segment, view, pixel
    dropped_points: int = 0  # rows of points.npz left out for a NaN or infinite xyz or conf

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def reference_image(self) -> int:
        """Index of the reference view (the first keyframe): its camera frame is the world frame."""
        return next((img.index for img in self.images if img.keyframe), 0)

    def panoptic(self, stem: str) -> np.ndarray:
        """int32 [H, W] segment ids of one image (0 = void), COCO-panoptic decoded.

        The file is ``panoptic/<stem>.png`` of a checked image stem, whatever the manifest entry names.
        """
        panoptic = self.manifest.get("panoptic")
        if stem not in {img.stem for img in self.images} or not isinstance(panoptic, dict) or stem not in panoptic:
            raise BundleError(f"the bundle {self.path} has no panoptic map for image {stem!r}")
        path = _file(self.path, panoptic_file(stem))
        if path is None:
            raise BundleError(
                f"the bundle {self.path} lacks {panoptic_file(stem)}; it is incomplete, run the job again"
            )
        size = next(img.processed_size for img in self.images if img.stem == stem)
        try:
            rgb = read_png(path, size=size)
        except PngError as exc:
            raise BundleError(f"{exc}; the bundle is incomplete or corrupt, run the job again") from None
        if rgb.shape[2] < 3:
            raise BundleError(f"the panoptic map of {stem!r} must be an RGB PNG")
        return decode_panoptic(rgb[..., :3])


def _need(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BundleError(f"{where} has no '{key}' field; the bundle is corrupt or not a PanSt3R bundle")
    return obj[key]


def check_version(version: Any) -> str:
    """Refuse a format major version other than the one this add-on reads."""
    parsed = parse_version(version)
    if parsed is None:
        raise BundleError(f"the bundle's format_version {version!r} is not of the form 'MAJOR.MINOR'")
    if parsed[0] != FORMAT_MAJOR:
        raise BundleError(
            f"this bundle has format version {version}, but this add-on reads format "
            f"{FORMAT_MAJOR}.x only; update the PanSt3R add-on to import it"
        )
    return version


def _matrix(value: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise BundleError(f"{where} must be a {shape[0]}x{shape[1]} matrix of finite numbers")
    return arr


def _color(value: Any, where: str) -> tuple[int, int, int]:
    """[r, g, b] with integers 0..255 (sRGB), or a BundleError naming the field."""
    if isinstance(value, list) and len(value) == 3:
        r, g, b = value
        if type(r) is int and type(g) is int and type(b) is int and 0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255:
            return r, g, b  # one test per channel, no generator: a manifest may list 10,000 segments
    raise BundleError(f"{where} must be [r, g, b] with integers 0 to 255, found {str(value)[:60]}; {CORRUPT}")


def _intrinsics(value: Any, where: str) -> np.ndarray:
    """A 3x3 K with positive focal lengths (a zero or negative focal has no camera)."""
    K = _matrix(value, (3, 3), where)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise BundleError(f"{where} has focal lengths {K[0, 0]:g} and {K[1, 1]:g}; they must be positive; {CORRUPT}")
    return K


def _pose(value: Any, where: str) -> np.ndarray:
    """A 4x4 camera-to-world matrix whose 3x3 part is a rotation."""
    pose = _matrix(value, (4, 4), where)
    rot = pose[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-2 or np.linalg.det(rot) < 0:
        raise BundleError(f"{where} is not a rotation and translation (its 3x3 part is not a rotation); {CORRUPT}")
    return pose


def _images(manifest: dict) -> list[ImageInfo]:
    out = []
    for i, entry in enumerate(_need(manifest, "images", "the manifest")):
        where = f"manifest images[{i}]"
        width, height = (int(v) for v in _need(entry, "processed_size", where))
        if not (width >= 1 and height >= 1 and width * height <= MAX_IMAGE_PIXELS):
            raise BundleError(
                f"{where} has processed_size {width}x{height}, outside 1 to {MAX_IMAGE_PIXELS} pixels; {CORRUPT}"
            )
        stem = _need(entry, "stem", where)
        if not is_safe_stem(stem):
            raise BundleError(
                f"{where} has the stem {stem!r}, which is not a plain file name; the bundle is "
                "corrupt, run the job again"
            )
        out.append(
            ImageInfo(i, str(_need(entry, "file", where)), stem, (width, height), bool(entry.get("keyframe", i == 0)))
        )
    if not out:
        raise BundleError("the bundle lists no images")
    if len({img.stem.casefold() for img in out}) != len(out):
        raise BundleError("the bundle lists an image stem twice; it is corrupt, run the job again")
    return out


def _cameras(manifest: dict, images: list[ImageInfo], root: Path) -> list[CameraInfo]:
    by_image: dict[int, CameraInfo] = {}
    for i, cam in enumerate(_need(manifest, "cameras", "the manifest")):
        where = f"manifest cameras[{i}]"
        index = int(_need(cam, "image", where))
        if not 0 <= index < len(images) or index in by_image:
            raise BundleError(f"{where} refers to image {index}, which is unknown or already has a camera")
        img = images[index]
        photo = _file(root, image_file(img.stem))
        by_image[index] = CameraInfo(
            index,
            img.stem,
            _intrinsics(_need(cam, "K", where), f"{where} K"),
            _pose(_need(cam, "cam_to_world", where), f"{where} cam_to_world"),
            *img.processed_size,
            photo,
        )
    if len(by_image) != len(images):
        raise BundleError(f"the bundle has {len(by_image)} cameras for {len(images)} images; it is corrupt")
    return [by_image[i] for i in range(len(images))]


def _classes_and_segments(manifest: dict) -> tuple[dict[int, ClassInfo], list[SegmentInfo]]:
    classes = {}
    for i, entry in enumerate(_need(manifest, "classes", "the manifest")):
        where = f"manifest classes[{i}]"
        class_id = int(_need(entry, "id", where))
        classes[class_id] = ClassInfo(
            class_id,
            str(_need(entry, "name", where)),
            _color(_need(entry, "color", where), f"{where} 'color'"),
            bool(entry.get("isthing")),
        )
    segments = []
    for i, entry in enumerate(_need(manifest, "segments", "the manifest")):
        where = f"manifest segments[{i}]"
        seg = SegmentInfo(
            int(_need(entry, "id", where)),
            int(_need(entry, "class_id", where)),
            float(entry.get("score", 0.0)),
            _color(_need(entry, "color", where), f"{where} 'color'"),
            int(entry.get("point_count", 0)),
        )
        if seg.class_id not in classes:
            raise BundleError(f"segment {seg.id} has class_id {seg.class_id}, which the manifest does not list")
        segments.append(seg)
    return classes, segments


def _point_array(name: str, arr: np.ndarray) -> np.ndarray:
    """One points.npz array as the format's dtype; a cast that would change values is refused."""
    dtype, tail = POINT_ARRAYS[name]
    if arr.dtype.kind not in ACCEPTED_KINDS[dtype.kind] or arr.shape[1:] != tail or arr.ndim != 1 + len(tail):
        raise BundleError(
            f"{POINTS} array '{name}' has dtype {arr.dtype.name} and shape {arr.shape}; "
            f"expected {dtype.name} (N{''.join(f', {t}' for t in tail)})"
        )
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise BundleError(
            f"{POINTS} array '{name}' holds values outside the range of {dtype.name}; "
            "the bundle is corrupt, run the job again"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


def _load_points(root: Path, images: list[ImageInfo]) -> tuple[dict[str, np.ndarray], int]:
    """(points.npz arrays, rows dropped): refused before inflating beyond what the images can hold, checked
    array by array; rows with a NaN or infinite xyz or conf are left out (they cannot be placed or fitted)."""
    path = _file(root, POINTS)
    if path is None:
        raise BundleError(f"the bundle has no {POINTS} ({root / POINTS}); it is incomplete, run the job again")
    try:
        raw = read_npz(path, points_byte_limit(sum(w * h for w, h in (img.processed_size for img in images))))
    except ValueError as exc:
        raise BundleError(f"{exc}; {CORRUPT}") from None
    missing = [name for name in POINT_ARRAYS if name not in raw]
    if missing:
        raise BundleError(f"{path} lacks the array '{missing[0]}'; the bundle is corrupt, run the job again")
    out = {name: _point_array(name, raw[name]) for name in POINT_ARRAYS}
    if len({len(arr) for arr in out.values()}) != 1:
        raise BundleError(f"the arrays of {POINTS} disagree on the number of points; the bundle is corrupt")
    finite = np.isfinite(out["xyz"]).all(axis=1) & np.isfinite(out["conf"])
    if finite.all():
        return out, 0
    return {name: arr[finite] for name, arr in out.items()}, int(finite.size - finite.sum())


def _load_manifest(root: Path) -> dict:
    path = _file(root, MANIFEST)
    if path is None:
        raise BundleError(f"{root} is not a PanSt3R result bundle: it has no {MANIFEST}")
    try:
        return load_json(read_limited(path, MAX_MANIFEST_BYTES), str(path))
    except OSError as exc:
        raise BundleError(f"cannot read {path} ({exc.strerror or exc}); check the folder's permissions") from None
    except ValueError as exc:
        raise BundleError(f"{exc}; the bundle is corrupt") from None


def read_bundle(path: str | Path) -> BundleData:
    """Read a bundle folder (or its manifest.json) into plain data; raises :class:`BundleError`."""
    root = Path(path)
    if root.name == MANIFEST and root.is_file():
        root = root.parent
    manifest = _load_manifest(root)
    version = check_version(_need(manifest, "format_version", "the manifest"))
    try:
        images = _images(manifest)
        cameras = _cameras(manifest, images, root)
        classes, segments = _classes_and_segments(manifest)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BundleError(f"the manifest of {root} has a malformed field ({exc}); the bundle is corrupt") from None
    points, dropped = _load_points(root, images)
    _file(root, SPLATS_FILE)  # a linked splats.ply is refused now, before anything is imported
    known = np.array(sorted({0} | {s.id for s in segments}), dtype=np.int64)
    used = np.unique(points["segment"])
    unknown = used[~np.isin(used, known)]
    if unknown.size:
        raise BundleError(f"{POINTS} uses segment ids {unknown[:10].tolist()} that the manifest does not list")
    if points["view"].size and (points["view"].min() < 0 or points["view"].max() >= len(images)):
        raise BundleError(f"{POINTS} has 'view' indices outside 0..{len(images) - 1}")
    return BundleData(root, manifest, version, images, cameras, classes, segments, points, dropped)
