"""Validation of the result bundle, shared by the writer and the engine's reader.

Both enforce the contract of :mod:`.spec`. Every failure raises
:class:`BundleError` with one sentence naming the field and what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from panst3r_engine.bundle.spec import (
    FORMAT_VERSION,
    MAX_IMAGE_PIXELS,
    MAX_SEGMENT_ID,
    POINT_ARRAYS,
    is_safe_stem,
    panoptic_file,
)
from panst3r_engine.bundle.spec import parse_version as _parse_version
from panst3r_engine.errors import PanSt3RError


class BundleError(PanSt3RError):
    """A result bundle that cannot be written or read, with a sentence a user can act on."""

    code = "bundle"


def panoptic_segments_info(ids: np.ndarray, class_of: Mapping[int, int]) -> list[dict]:
    """COCO ``segments_info`` of an id map: area (pixels) and bbox [x, y, w, h] of every non-zero id."""
    width = ids.shape[1]
    flat = ids.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return []
    order = np.argsort(flat[where], kind="stable")
    values, (rows, cols) = flat[where][order], np.divmod(where[order], width)
    uniq, starts, counts = np.unique(values, return_index=True, return_counts=True)
    x0, x1 = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts)
    y0, y1 = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts)
    return [
        {
            "id": int(s),
            "category_id": int(class_of[int(s)]),
            "area": int(n),
            "bbox": [int(a), int(b), int(c - a + 1), int(d - b + 1)],
            "iscrowd": 0,
        }
        for s, n, a, b, c, d in zip(uniq, counts, x0, y0, x1, y1)
    ]


# ---------------------------------------------------------------- small field checks
def need(obj: Mapping, key: str, where: str) -> Any:
    """obj[key], or a BundleError naming the missing field."""
    if not isinstance(obj, Mapping):
        raise BundleError(f"{where} must be a JSON object, found {type(obj).__name__}")
    if key not in obj:
        raise BundleError(f"{where} has no '{key}' field")
    return obj[key]


def as_int(value: Any, where: str, minimum: int | None = None) -> int:
    """An integer (bools refused), optionally >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BundleError(f"{where} must be an integer, found {value!r}")
    if minimum is not None and value < minimum:
        raise BundleError(f"{where} must be >= {minimum}, found {value}")
    return int(value)


def as_number(value: Any, where: str) -> float:
    """A finite number."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise BundleError(f"{where} must be a finite number, found {value!r}")
    return float(value)


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BundleError(f"{where} must be a string, found {value!r}")
    return value


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BundleError(f"{where} must be true or false, found {value!r}")
    return value


def as_matrix(value: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A nested list of finite numbers with exactly this shape."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BundleError(f"{where} must be a {'x'.join(map(str, shape))} list of numbers") from None
    if arr.shape != shape or not np.isfinite(arr).all():
        raise BundleError(
            f"{where} must be a {'x'.join(map(str, shape))} list of finite numbers, found shape {arr.shape}"
        )
    return arr


def as_color(value: Any, where: str) -> list[int]:
    """[r, g, b] with integers 0..255."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise BundleError(f"{where} must be [r, g, b], found {value!r}")
    channels = [as_int(v, where, 0) for v in value]
    if max(channels) > 255:
        raise BundleError(f"{where} must have channels 0..255, found {value!r}")
    return channels


def check_stem(stem: Any, where: str) -> str:
    """A stem usable as a file name on Linux, macOS and Windows."""
    stem = as_str(stem, where)
    if not is_safe_stem(stem):
        raise BundleError(
            f"{where} {stem!r} is not a safe file name: use letters, digits, '_', '-' and '.', "
            "at most 128 characters, not starting with '.' or '-'"
        )
    return stem


def parse_version(version: Any) -> tuple[int, int]:
    """'1.0' -> (1, 0)."""
    parsed = _parse_version(version)
    if parsed is None:
        raise BundleError(f"the bundle's format_version {version!r} is not of the form 'MAJOR.MINOR'")
    return parsed


def check_version(version: Any) -> None:
    """Refuse a major version this engine does not read."""
    major, _ = parse_version(version)
    ours = parse_version(FORMAT_VERSION)[0]
    if major != ours:
        raise BundleError(
            f"this bundle has format version {version}, but this panst3r_engine reads format "
            f"{ours}.x only; update panst3r_engine (or the add-on) to read it"
        )


# ---------------------------------------------------------------- manifest sections
def check_header(manifest: Any) -> None:
    """Top-level fields other than the per-image/per-segment lists."""
    if not isinstance(manifest, Mapping):
        raise BundleError("the manifest must be a JSON object")
    check_version(need(manifest, "format_version", "the manifest"))
    as_str(need(manifest, "created", "the manifest"), "manifest 'created'")
    engine = need(manifest, "engine", "the manifest")
    as_str(need(engine, "name", "manifest 'engine'"), "manifest engine 'name'")
    as_str(need(engine, "version", "manifest 'engine'"), "manifest engine 'version'")
    model = need(manifest, "model", "the manifest")
    as_str(need(model, "id", "manifest 'model'"), "manifest model 'id'")
    if need(model, "version", "manifest 'model'") not in ("v1", "v2"):
        raise BundleError(f"manifest model 'version' must be 'v1' or 'v2', found {model['version']!r}")
    md5 = need(model, "checkpoint_md5", "manifest 'model'")
    if md5 is not None:
        as_str(md5, "manifest model 'checkpoint_md5'")
    if not isinstance(need(manifest, "options", "the manifest"), Mapping):
        raise BundleError("manifest 'options' must be a JSON object")
    timings = need(manifest, "timings", "the manifest")
    if not isinstance(timings, Mapping):
        raise BundleError("manifest 'timings' must be a JSON object of stage -> seconds")
    for stage, seconds in timings.items():
        as_number(seconds, f"timing of stage {stage!r}")


def _check_list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise BundleError(f"manifest '{name}' must be a list, found {type(value).__name__}")
    return value


def check_images(images: Any) -> list[str]:
    """Returns the stems, in image order; stems must be unique even on case-insensitive disks."""
    stems, seen = [], set()
    for i, entry in enumerate(_check_list(images, "images")):
        where = f"manifest images[{i}]"
        if as_int(need(entry, "index", where), f"{where} 'index'") != i:
            raise BundleError(f"{where} has index {entry['index']}; images must be listed in index order from 0")
        as_str(need(entry, "file", where), f"{where} 'file'")
        stem = check_stem(need(entry, "stem", where), f"{where} stem")
        if stem.casefold() in seen:
            raise BundleError(f"image stem {stem!r} is used twice; stems must be unique (ignoring case)")
        seen.add(stem.casefold())
        stems.append(stem)
        for key in ("original_size", "processed_size"):
            size = as_matrix(need(entry, key, where), (2,), f"{where} '{key}'")
            if (size < 1).any() or (size != np.round(size)).any():
                raise BundleError(f"{where} '{key}' must be [W, H] in whole pixels, found {entry[key]!r}")
        if size.prod() > MAX_IMAGE_PIXELS and key == "processed_size":
            raise BundleError(
                f"{where} 'processed_size' {entry[key]!r} exceeds {MAX_IMAGE_PIXELS} pixels; "
                "process the photos at a lower resolution"
            )
        box = as_matrix(need(entry, "crop_box", where), (4,), f"{where} 'crop_box'")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BundleError(f"{where} 'crop_box' must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        as_bool(need(entry, "keyframe", where), f"{where} 'keyframe'")
    return stems


def processed_sizes(images: list[dict]) -> np.ndarray:
    """int64 [V, 2]: (W, H) of every processed image."""
    return np.asarray([entry["processed_size"] for entry in images], dtype=np.int64).reshape(-1, 2)


def check_cameras(cameras: Any, num_images: int) -> None:
    """Exactly one camera per image."""
    seen = set()
    for i, cam in enumerate(_check_list(cameras, "cameras")):
        where = f"manifest cameras[{i}]"
        image = as_int(need(cam, "image", where), f"{where} 'image'", 0)
        if image >= num_images or image in seen:
            raise BundleError(f"{where} refers to image {image}, which is unknown or already has a camera")
        seen.add(image)
        as_matrix(need(cam, "K", where), (3, 3), f"{where} 'K'")
        pose = as_matrix(need(cam, "cam_to_world", where), (4, 4), f"{where} 'cam_to_world'")
        if not np.allclose(pose[3], [0, 0, 0, 1]):
            raise BundleError(f"{where} 'cam_to_world' must end with the row [0, 0, 0, 1]")
        if as_number(need(cam, "focal", where), f"{where} 'focal'") <= 0:
            raise BundleError(f"{where} 'focal' must be positive")
        as_number(need(cam, "confidence", where), f"{where} 'confidence'")
    if len(seen) != num_images:
        raise BundleError(f"the manifest has {len(seen)} cameras for {num_images} images; give one camera per image")


def check_classes(classes: Any) -> set[int]:
    """Returns the class ids."""
    ids = set()
    for i, entry in enumerate(_check_list(classes, "classes")):
        where = f"manifest classes[{i}]"
        class_id = as_int(need(entry, "id", where), f"{where} 'id'", 0)
        if class_id in ids:
            raise BundleError(f"class id {class_id} is listed twice in the manifest")
        ids.add(class_id)
        if not as_str(need(entry, "name", where), f"{where} 'name'").strip():
            raise BundleError(f"{where} has an empty name")
        as_color(need(entry, "color", where), f"{where} 'color'")
        as_bool(need(entry, "isthing", where), f"{where} 'isthing'")
    return ids


def check_segments(segments: Any, class_ids: set[int], num_images: int) -> dict[int, int]:
    """Returns {segment id: class id}. Every field is required (the writer fills the derived ones first)."""
    class_of: dict[int, int] = {}
    for i, seg in enumerate(_check_list(segments, "segments")):
        where = f"manifest segments[{i}]"
        seg_id = as_int(need(seg, "id", where), f"{where} 'id'", 1)
        if seg_id > MAX_SEGMENT_ID or seg_id in class_of:
            raise BundleError(f"segment id {seg_id} is listed twice or exceeds {MAX_SEGMENT_ID}")
        class_id = as_int(need(seg, "class_id", where), f"{where} 'class_id'")
        if class_id not in class_ids:
            raise BundleError(f"segment {seg_id} has class_id {class_id}, which is not in the manifest's classes")
        class_of[seg_id] = class_id
        as_number(need(seg, "score", where), f"{where} 'score'")
        as_color(need(seg, "color", where), f"{where} 'color'")
        count = as_int(need(seg, "point_count", where), f"{where} 'point_count'", 0)
        views = need(seg, "views", where)
        if not isinstance(views, list) or any(as_int(v, f"{where} 'views'", 0) >= num_images for v in views):
            raise BundleError(f"{where} 'views' must list image indices below {num_images}")
        low, high = need(seg, "bbox_min", where), need(seg, "bbox_max", where)
        if count == 0 and low is None and high is None:
            continue
        if (as_matrix(low, (3,), f"{where} 'bbox_min'") > as_matrix(high, (3,), f"{where} 'bbox_max'")).any():
            raise BundleError(f"{where} has bbox_min above bbox_max")
    return class_of


def check_panoptic_entries(panoptic: Any, stems: list[str], class_of: dict[int, int]) -> None:
    """The manifest's ``panoptic`` dict: known stems, fixed file names, known segment ids."""
    if not isinstance(panoptic, Mapping):
        raise BundleError("manifest 'panoptic' must be a JSON object of image stem -> entry")
    for stem, entry in panoptic.items():
        if stem not in stems:
            raise BundleError(f"manifest 'panoptic' has an entry for {stem!r}, which is not an image stem")
        if need(entry, "file", f"panoptic entry {stem!r}") != panoptic_file(stem):
            raise BundleError(f"panoptic entry {stem!r} must name the file 'panoptic/{stem}.png'")
        info = need(entry, "segments_info", f"panoptic entry {stem!r}")
        for item in _check_list(info, f"panoptic[{stem!r}].segments_info"):
            seg_id = as_int(need(item, "id", f"segments_info of {stem!r}"), f"segments_info id of {stem!r}")
            if seg_id not in class_of:
                raise BundleError(f"the panoptic map of {stem!r} lists segment {seg_id}, which is not in 'segments'")
            for key in ("category_id", "area", "iscrowd"):
                as_int(need(item, key, f"segments_info of {stem!r}"), f"segments_info {key} of {stem!r}")
            as_matrix(need(item, "bbox", f"segments_info of {stem!r}"), (4,), f"segments_info bbox of {stem!r}")


def check_manifest(manifest: Any) -> tuple[list[str], np.ndarray, dict[int, int]]:
    """Validate a complete manifest; returns (stems, processed sizes [V, 2], {segment id: class id})."""
    check_header(manifest)
    stems = check_images(manifest["images"])
    check_cameras(need(manifest, "cameras", "the manifest"), len(stems))
    class_ids = check_classes(need(manifest, "classes", "the manifest"))
    class_of = check_segments(need(manifest, "segments", "the manifest"), class_ids, len(stems))
    check_panoptic_entries(need(manifest, "panoptic", "the manifest"), stems, class_of)
    warnings = manifest.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise BundleError("manifest 'warnings' must be a list of sentences")
    return stems, processed_sizes(manifest["images"]), class_of


# ---------------------------------------------------------------- point arrays
def _coerce(name: str, value: Any, strict: bool) -> np.ndarray:
    """One points array with the right dtype and per-point shape (casting losslessly when not strict)."""
    dtype, tail = POINT_ARRAYS[name]
    arr = np.asarray(value)
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
        raise BundleError(f"points '{name}' must have shape (N{''.join(f', {t}' for t in tail)}), found {arr.shape}")
    if arr.dtype == dtype:
        return arr
    if strict or arr.dtype.kind not in ("f" if dtype.kind == "f" else "iu"):
        raise BundleError(f"points '{name}' must be {dtype.name}, found {arr.dtype.name}")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise BundleError(f"points '{name}' has values outside the {dtype.name} range")
    return arr.astype(dtype)


def check_points(points: Any, sizes: np.ndarray, segment_ids: set[int], strict: bool) -> dict[str, np.ndarray]:
    """Validate the point arrays against the images' sizes and the segment ids.

    Args:
        points: name -> array; the six arrays of :data:`POINT_ARRAYS`. Extra arrays are refused when
            writing and kept (if they share N) when reading, for forward compatibility.
        sizes: int64 [V, 2], (W, H) of every processed image.
        strict: reading: dtypes must match exactly; writing: lossless casts are made.
    Returns:
        name -> array with the bundle's dtypes.
    """
    if not isinstance(points, Mapping):
        raise BundleError("points must be a dict of arrays")
    missing = [name for name in POINT_ARRAYS if name not in points]
    if missing:
        raise BundleError(f"points lack the array(s) {', '.join(missing)}")
    extra = [name for name in points if name not in POINT_ARRAYS]
    if extra and not strict:
        raise BundleError(
            f"points has unknown array(s) {', '.join(extra)}; the format defines {', '.join(POINT_ARRAYS)}"
        )
    out = {name: _coerce(name, points[name], strict) for name in POINT_ARRAYS}
    out.update({name: np.asarray(points[name]) for name in extra})
    lengths = {name: len(arr) for name, arr in out.items()}
    if len(set(lengths.values())) > 1:
        raise BundleError(f"point arrays disagree on the number of points: {lengths}")
    _check_point_values(out, sizes, segment_ids)
    return out


def _check_point_values(points: dict[str, np.ndarray], sizes: np.ndarray, segment_ids: set[int]) -> None:
    """Finite coordinates, known views and segments, pixels inside their image."""
    if not np.isfinite(points["xyz"]).all() or not np.isfinite(points["conf"]).all():
        raise BundleError("points 'xyz' and 'conf' must be finite (no NaN or infinity)")
    view = points["view"].astype(np.int64)
    if view.size and (view.min() < 0 or view.max() >= len(sizes)):
        raise BundleError(f"points 'view' must be image indices 0..{len(sizes) - 1}")
    if view.size and (points["pixel"] >= sizes[view]).any():
        raise BundleError("points 'pixel' has (x, y) outside the processed image of its view")
    used = np.unique(points["segment"])
    unknown = [int(s) for s in used if s != 0 and int(s) not in segment_ids]
    if unknown or (used.size and used[0] < 0):
        raise BundleError(
            f"points 'segment' uses id(s) {unknown[:10] or [int(used[0])]} that are not in the "
            "manifest's segments (0 means unlabelled)"
        )
