"""A small synthetic result bundle (3 views, 4 segments with points, 1 without) for bundle and export tests."""

from __future__ import annotations

import numpy as np

SIZES = [(32, 24), (32, 24), (24, 32)]  # processed (W, H) per view; the last one is portrait
CLASSES = [
    {"id": 0, "name": "wall", "isthing": False},
    {"id": 1, "name": "chair", "isthing": True},
    {"id": 2, "name": "dining table", "isthing": True},
]
SEGMENT_CLASSES = {1: 0, 2: 1, 3: 1, 4: 2, 7: 2}  # segment id -> class id; 7 has pixels but no points
POINTS_PER_VIEW = 60


def _panoptic_map(view: int, width: int, height: int) -> np.ndarray:
    """int32 [H, W]: wall on top, two chairs and a table as rectangles, a void strip, segment 7 only in view 2."""
    ids = np.zeros((height, width), np.int32)
    ids[: height // 2] = 1
    ids[height // 2 :, 2 + view : 9 + view] = 2
    if view != 1:
        ids[height // 2 + 2 :, 12:18] = 3
    ids[height - 6 :, 19 : width - 1] = 4
    if view == 2:
        ids[1:4, 1:5] = 7
    return ids


def _camera(view: int, width: int, height: int, rng: np.random.Generator) -> dict:
    """A camera with a random rotation (QR of a Gaussian matrix, det +1) and translation."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.diag(r))
    rot[:, 2] *= np.linalg.det(rot)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, rng.normal(size=3)
    focal = 30.0 + 5 * view
    K = [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]
    return {"image": view, "K": K, "cam_to_world": pose.tolist(), "focal": focal, "confidence": 2.5 + view}


def _photo(width: int, height: int, view: int) -> np.ndarray:
    """uint8 [H, W, 3] smooth gradient (so JPEG stays close to it)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 60 * view + 40)], axis=-1
    ).astype(np.uint8)


def make_bundle_inputs(seed: int = 0) -> tuple[dict, dict, dict, dict]:
    """(manifest, points, panoptic, images) ready for ``write_bundle``; derived manifest fields left out."""
    rng = np.random.default_rng(seed)
    stems = ["IMG_0001", "IMG_0002", "portrait"]
    images, cameras, panoptic, photos, parts = [], [], {}, {}, []
    for view, ((width, height), stem) in enumerate(zip(SIZES, stems)):
        images.append(
            {
                "index": view,
                "file": f"{stem}.JPG",
                "stem": stem,
                "original_size": [width * 4, height * 4],
                "processed_size": [width, height],
                "crop_box": [0, 0, width * 4, height * 4],
                "keyframe": view != 1,
            }
        )
        cameras.append(_camera(view, width, height, rng))
        panoptic[stem] = _panoptic_map(view, width, height)
        photos[stem] = _photo(width, height, view)
        pixel = np.stack([rng.integers(0, width, POINTS_PER_VIEW), rng.integers(0, height, POINTS_PER_VIEW)], 1)
        segment = panoptic[stem][pixel[:, 1], pixel[:, 0]]
        parts.append((pixel, np.where(segment == 7, 0, segment), np.full(POINTS_PER_VIEW, view)))
    n = POINTS_PER_VIEW * len(SIZES)
    points = {
        "xyz": rng.normal(size=(n, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "conf": rng.uniform(1.0, 5.0, n).astype(np.float32),
        "segment": np.concatenate([p[1] for p in parts]).astype(np.int32),
        "view": np.concatenate([p[2] for p in parts]).astype(np.int16),
        "pixel": np.concatenate([p[0] for p in parts]).astype(np.uint16),
    }
    manifest = {
        "engine": {"name": "panst3r_engine", "version": "0.1.0"},
        "model": {"id": "panst3r-v2-512", "version": "v2", "checkpoint_md5": "0123456789abcdef"},
        "options": {"postprocess": "standard_v2", "keyframes": 2, "conf_threshold": 1.5},
        "timings": {"encode": 0.5, "decode_panoptic": 1.25},
        "images": images,
        "cameras": cameras,
        "classes": [dict(c) for c in CLASSES],
        "segments": [{"id": s, "class_id": c, "score": 0.5 + 0.06 * s} for s, c in SEGMENT_CLASSES.items()],
    }
    return manifest, points, panoptic, photos


def make_consistent_bundle_inputs(seed: int = 0, invalid_views: tuple[int, ...] = ()) -> tuple[dict, dict, dict, dict]:
    """Like :func:`make_bundle_inputs`, but each point lies on the ray through the centre of its pixel
    (col + 0.5, row + 0.5, as ``K`` is meant) at a depth of 1 to 4, so projecting it through its view's
    camera gives its pixel back; the cameras of ``invalid_views`` are marked ``valid: false``."""
    manifest, points, panoptic, photos = make_bundle_inputs(seed)
    rng = np.random.default_rng(seed + 1)
    xyz = np.empty((len(points["view"]), 3))
    for cam in manifest["cameras"]:
        rows = np.flatnonzero(points["view"] == cam["image"])
        pixels = np.concatenate([points["pixel"][rows].astype(np.float64) + 0.5, np.ones((len(rows), 1))], axis=1)
        rays = pixels @ np.linalg.inv(np.asarray(cam["K"])).T
        local = rays * rng.uniform(1.0, 4.0, (len(rows), 1))
        pose = np.asarray(cam["cam_to_world"])
        xyz[rows] = local @ pose[:3, :3].T + pose[:3, 3]
        cam["valid"] = cam["image"] not in invalid_views
    points["xyz"] = xyz.astype(np.float32)
    return manifest, points, panoptic, photos
