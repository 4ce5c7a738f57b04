"""A synthetic room as a result bundle: floor, back wall, two chairs, a table, seen by three cameras.

The whole scene is pitched by ``tilt`` degrees in the reference camera's frame
(a photo taken looking down), so levelling on the floor has work to do. Used by
the render test, the README picture and benchmarks/bench_import.py (2 M points).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from panst3r_engine.bundle.write import write_bundle

WIDTH, HEIGHT = 64, 48
CLASSES = [
    {"id": 0, "name": "floor", "isthing": False},
    {"id": 1, "name": "wall", "isthing": False},
    {"id": 2, "name": "chair", "isthing": True},
    {"id": 3, "name": "table", "isthing": True},
]
# segment id -> (class id, box centre (x, y, z), box size); OpenCV frame before the tilt, y down, floor at y = 1.2
BOXES = {
    1: (0, (0.0, 1.2, 3.0), (4.0, 0.0, 4.0)),
    2: (1, (0.0, -0.2, 5.0), (4.0, 2.8, 0.0)),
    3: (2, (-1.1, 0.8, 3.2), (0.5, 0.8, 0.5)),
    4: (2, (1.1, 0.8, 3.4), (0.5, 0.8, 0.5)),
    5: (3, (0.0, 0.85, 3.6), (1.4, 0.7, 0.8)),
}
COLORS = {0: (150, 110, 70), 1: (225, 220, 205), 2: (40, 90, 170), 3: (180, 60, 40)}  # photo colours


def tilt_matrix(degrees: float) -> np.ndarray:
    """[3, 3] rotation about the camera's x axis (the camera pitched down by `degrees`)."""
    a = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _area(size) -> float:
    """Surface area of a box (of a rectangle when one side is 0)."""
    a, b, c = size
    return a * b + b * c + c * a if 0 in size else 2 * (a * b + b * c + c * a)


def _box_points(centre, size, count: int, rng: np.random.Generator) -> np.ndarray:
    """Points on the surface of an axis-aligned box (a flat box is a rectangle)."""
    centre, size = np.asarray(centre), np.asarray(size)
    pts = rng.uniform(-0.5, 0.5, (count, 3)) * size
    thick = size > 0
    face_axis = rng.choice(np.flatnonzero(thick), count) if thick.all() else None
    if face_axis is not None:
        pts[np.arange(count), face_axis] = np.sign(rng.uniform(-1, 1, count)) * 0.5 * size[face_axis]
    return pts + centre


def _cameras(pitch: np.ndarray) -> list[np.ndarray]:
    """Camera-to-world poses in the reference camera's frame: the reference (identity) and two cameras to
    its sides, yawed towards the room centre about the gravity axis, all pitched like the reference."""
    poses = []
    for x, yaw in ((0.0, 0.0), (-1.2, 20.0), (1.2, -20.0)):
        a = np.radians(yaw)
        yaw_rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = pitch @ yaw_rot @ pitch.T, pitch @ np.array([x, 0.0, 0.0])
        poses.append(pose)
    return poses


def room_inputs(
    total_points: int = 20000,
    tilt: float = 15.0,
    seed: int = 0,
    unlabelled: float = 0.05,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> tuple[dict, dict, dict, dict]:
    """(manifest, points, panoptic, photos) for ``write_bundle``; ``size`` (W, H) of the photos, which bounds
    the number of points a reader accepts (one per pixel)."""
    width, height = size
    rng = np.random.default_rng(seed)
    rot = tilt_matrix(tilt)
    weights = np.array([_area(size) for _, _, size in BOXES.values()])
    counts = np.floor(weights / weights.sum() * total_points * (1 - unlabelled)).astype(int)
    xyz, segment, rgb = [], [], []
    for (seg_id, (class_id, centre, size)), count in zip(BOXES.items(), counts):
        xyz.append(_box_points(centre, size, count, rng))
        segment.append(np.full(count, seg_id))
        shade = rng.uniform(0.8, 1.1, (count, 1))
        rgb.append(np.clip(np.array(COLORS[class_id]) * shade, 0, 255))
    rest = total_points - int(counts.sum())
    xyz.append(rng.uniform([-2, -1.5, 1], [2, 1.2, 5], (rest, 3)))
    segment.append(np.zeros(rest))
    rgb.append(rng.uniform(0, 255, (rest, 3)))
    xyz = np.concatenate(xyz) @ rot.T  # the world is the pitched reference camera's frame
    n = len(xyz)
    poses = _cameras(rot)
    focal = 0.9 * width
    K = [[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]
    stems = ["ref", "left", "right"]
    y, x = np.mgrid[0:height, 0:width]
    photo = np.stack([x * 256 // width, y * 240 // height, np.full_like(x, 128)], -1).astype(np.uint8)
    manifest = {
        "model": {"id": "synthetic-room", "version": "v2", "checkpoint_md5": None},
        "options": {"conf_threshold": 1.5},
        "images": [
            {
                "index": i,
                "file": f"{s}.jpg",
                "stem": s,
                "original_size": [width * 8, height * 8],
                "processed_size": [width, height],
                "crop_box": [0, 0, width * 8, height * 8],
                "keyframe": True,
            }
            for i, s in enumerate(stems)
        ],
        "cameras": [
            {"image": i, "K": K, "cam_to_world": p.tolist(), "focal": focal, "confidence": 5.0}
            for i, p in enumerate(poses)
        ],
        "classes": [dict(c) for c in CLASSES],  # the writer gives them the engine's distinct class colours
        "segments": [{"id": s, "class_id": c, "score": 0.9} for s, (c, _, _) in BOXES.items()],
    }
    points = {
        "xyz": xyz.astype(np.float32),
        "rgb": np.concatenate(rgb).astype(np.uint8),
        "conf": rng.uniform(1.5, 10.0, n).astype(np.float32),
        "segment": np.concatenate(segment).astype(np.int32),
        "view": rng.integers(0, 3, n).astype(np.int16),
        "pixel": np.stack([rng.integers(0, width, n), rng.integers(0, height, n)], 1).astype(np.uint16),
    }
    return manifest, points, {}, {s: photo for s in stems}


def write_room_bundle(out: str | Path, total_points: int = 20000, tilt: float = 15.0, seed: int = 0) -> Path:
    return write_bundle(out, *room_inputs(total_points, tilt, seed))
