"""A procedural test scene for the splat layer: a numpy ray caster, known cameras, ground-truth labels.

World z is up. A 4 x 4 m checkered floor (segment 1, class "floor"), two yaw-rotated boxes (segments 2, 3,
class "box") and two spheres (segments 4, 5, class "sphere") under a sky of colour ``SKY`` (segment 0 =
void). Lambert shading from one directional light. Training cameras sit on a circle around the objects;
held-out cameras lie between them, closer and higher, so they are truly novel poses. Cameras are OpenCV
(x right, y down, z forward) with pixel centres at +0.5, as the bundle stores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panst3r_engine.bundle.write import write_bundle

SKY = np.array([0.85, 0.9, 1.0])
LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])
CLASSES = [
    {"id": 0, "name": "floor", "isthing": False},
    {"id": 1, "name": "box", "isthing": True},
    {"id": 2, "name": "sphere", "isthing": True},
]
SEGMENT_CLASS = {1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
# (segment, centre, half sizes, yaw, albedo)
BOXES = [
    (2, (-0.7, 0.4, 0.35), (0.35, 0.25, 0.35), 0.5, (0.8, 0.15, 0.1)),
    (3, (0.6, -0.6, 0.25), (0.25, 0.4, 0.25), -0.3, (0.15, 0.7, 0.2)),
]
SPHERES = [(4, (0.5, 0.7, 0.3), 0.3, (0.15, 0.25, 0.85)), (5, (-0.4, -0.6, 0.22), 0.22, (0.9, 0.8, 0.1))]


@dataclass
class Camera:
    K: np.ndarray  # [3, 3]
    cam_to_world: np.ndarray  # [4, 4] OpenCV axes
    width: int
    height: int


@dataclass
class Shot:
    rgb: np.ndarray  # [H, W, 3] float 0-1
    segment: np.ndarray  # [H, W] int32, 0 = sky
    xyz: np.ndarray  # [H, W, 3] hit points (nan for sky)


def look_at(eye, target, width: int, height: int, focal_scale: float = 0.9) -> Camera:
    """An OpenCV camera at ``eye`` looking at ``target`` with world z up; fx = fy = focal_scale * W."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = np.stack([right, down, fwd], 1), eye
    f = focal_scale * width
    return Camera(np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]), c2w, width, height)


def ring_cameras(n_train: int, n_test: int, width: int, height: int) -> tuple[list[Camera], list[Camera]]:
    """Training cameras on a 3.2 m circle at 1.8 m; held-out ones between them at 0.9x radius, 0.5 m higher."""
    target = (0.0, 0.0, 0.2)
    train = [
        look_at((3.2 * np.cos(a), 3.2 * np.sin(a), 1.8), target, width, height)
        for a in 2 * np.pi * np.arange(n_train) / n_train
    ]
    test = [
        look_at((2.88 * np.cos(a), 2.88 * np.sin(a), 2.3), target, width, height)
        for a in 2 * np.pi * (np.arange(n_test) * (n_train // max(n_test, 1)) + 0.5) / n_train
    ]
    return train, test


def _box_hit(o, d, centre, half, yaw):
    """(t [M], local normal axis [M]) of rays against an oriented box; inf where missed."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])  # local -> world
    lo, ld = (o - centre) @ rot, d @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-np.asarray(half) - lo) / ld, (np.asarray(half) - lo) / ld
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, axis = np.nanmax(tmin, 1), np.nanargmax(tmin, 1)
    t_far = np.nanmin(tmax, 1)
    hit = (t_near <= t_far) & (t_near > 1e-6)
    normal_local = np.zeros_like(ld)
    normal_local[np.arange(len(ld)), axis] = -np.sign(ld[np.arange(len(ld)), axis])
    return np.where(hit, t_near, np.inf), normal_local @ rot.T


def _sphere_hit(o, d, centre, radius):
    oc = o - centre
    b = (oc * d).sum(1)
    disc = b * b - (oc * oc).sum(1) + radius * radius
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
    p = o + t[:, None] * d
    return t, (p - centre) / radius


def render_shot(cam: Camera) -> Shot:
    """Ray-cast colour, segment ids and hit points at every pixel centre."""
    j, i = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    rays = np.stack([(j - cam.K[0, 2]) / cam.K[0, 0], (i - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(j)], -1)
    d = rays.reshape(-1, 3) @ cam.cam_to_world[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(cam.cam_to_world[:3, 3], d.shape)
    m = len(d)
    best_t, seg = np.full(m, np.inf), np.zeros(m, np.int32)
    normal, albedo = np.zeros((m, 3)), np.zeros((m, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 2] < 0, -o[:, 2] / d[:, 2], np.inf)
    p = o + np.where(np.isfinite(t_floor), t_floor, 0)[:, None] * d
    t_floor = np.where((np.abs(p[:, 0]) <= 2) & (np.abs(p[:, 1]) <= 2), t_floor, np.inf)
    checker = (np.floor(p[:, 0] / 0.25) + np.floor(p[:, 1] / 0.25)) % 2
    floor_albedo = np.where(checker[:, None] > 0, [0.75, 0.7, 0.6], [0.35, 0.3, 0.28])
    candidates = [(1, t_floor, np.broadcast_to([0, 0, 1.0], (m, 3)), floor_albedo)]
    candidates += [
        (sid, *_box_hit(o, d, np.asarray(c), h, yaw), np.broadcast_to(a, (m, 3))) for sid, c, h, yaw, a in BOXES
    ]
    candidates += [(sid, *_sphere_hit(o, d, np.asarray(c), r), np.broadcast_to(a, (m, 3))) for sid, c, r, a in SPHERES]
    for sid, t, n, a in candidates:
        closer = t < best_t
        best_t[closer], seg[closer] = t[closer], sid
        normal[closer], albedo[closer] = n[closer], a[closer]
    hit = np.isfinite(best_t)
    shade = 0.35 + 0.65 * np.clip((normal * LIGHT).sum(1), 0, None)
    rgb = np.where(hit[:, None], albedo * shade[:, None], SKY)
    xyz = np.where(hit[:, None], o + np.where(hit, best_t, 0)[:, None] * d, np.nan)
    shape = (cam.height, cam.width)
    return Shot(rgb.reshape(*shape, 3), seg.reshape(shape), xyz.reshape(*shape, 3))


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def write_scene_bundle(out: Path, cams: list[Camera], shots: list[Shot], point_stride: int = 1) -> Path:
    """A result bundle of the training views: every ``point_stride``-th hit pixel becomes a labelled point."""
    images, cameras, photos, panoptic, parts = [], [], {}, {}, []
    for v, (cam, shot) in enumerate(zip(cams, shots)):
        stem = f"view_{v:02d}"
        images.append(
            {
                "index": v,
                "file": f"{stem}.png",
                "stem": stem,
                "original_size": [cam.width, cam.height],
                "processed_size": [cam.width, cam.height],
                "crop_box": [0, 0, cam.width, cam.height],
                "keyframe": True,
            }
        )
        cameras.append(
            {
                "image": v,
                "K": cam.K.tolist(),
                "cam_to_world": cam.cam_to_world.tolist(),
                "focal": float(cam.K[0, 0]),
                "confidence": 3.0,
            }
        )
        photos[stem], panoptic[stem] = to_uint8(shot.rgb), shot.segment
        ys, xs = np.nonzero(shot.segment > 0)
        ys, xs = ys[::point_stride], xs[::point_stride]
        parts.append(
            (shot.xyz[ys, xs], photos[stem][ys, xs], shot.segment[ys, xs], np.full(len(ys), v), np.stack([xs, ys], 1))
        )
    points = {
        "xyz": np.concatenate([p[0] for p in parts]).astype(np.float32),
        "rgb": np.concatenate([p[1] for p in parts]),
        "segment": np.concatenate([p[2] for p in parts]),
        "conf": np.full(sum(len(p[0]) for p in parts), 3.0, np.float32),
        "view": np.concatenate([p[3] for p in parts]).astype(np.int16),
        "pixel": np.concatenate([p[4] for p in parts]).astype(np.uint16),
    }
    manifest = {
        "model": {"id": "synthetic", "version": "v2", "checkpoint_md5": None},
        "images": images,
        "cameras": cameras,
        "classes": [dict(c) for c in CLASSES],
        "segments": [{"id": s, "class_id": c, "score": 1.0} for s, c in SEGMENT_CLASS.items()],
    }
    return write_bundle(out, manifest, points, panoptic, photos)


def class_map(segment: np.ndarray) -> np.ndarray:
    """[H, W] ground-truth class ids from segment ids (-1 for sky)."""
    lut = np.full(max(SEGMENT_CLASS) + 1, -1, np.int32)
    for s, c in SEGMENT_CLASS.items():
        lut[s] = c
    return lut[segment]


def make_scene(
    out: Path, width: int = 64, height: int = 48, n_train: int = 8, n_test: int = 2
) -> tuple[Path, list[Camera], list[Shot]]:
    """(bundle of the training views, held-out cameras, held-out ground truth)."""
    train, test = ring_cameras(n_train, n_test, width, height)
    bundle = write_scene_bundle(out, train, [render_shot(c) for c in train])
    return bundle, test, [render_shot(c) for c in test]
