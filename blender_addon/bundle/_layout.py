"""Layout proxies: one gravity-aligned oriented box per segment, and their ``layout.json``.

Standard library and ``numpy`` only: ``build.py`` copies this file byte for byte into the Blender
add-on (``blender_addon/bundle/_layout.py``), so the engine's ``export --to layout`` and the
add-on's proxies and "Export Layout JSON" share one implementation. A test checks the copy.

Gravity: the levelled frame is the add-on's import frame at scale 1. The world (the reference
camera's frame, OpenCV axes) is turned so that camera's up is +Z and it looks along +Y
(:func:`reference_rotation`); when enough points of a floor-like class exist, a plane fitted to them
is made horizontal with the floor at z = 0 (:func:`level_frame`).

Boxes (:func:`fit_box`): non-finite points are dropped; extents are trimmed percentiles, so a few
stray points do not inflate a box. The yaw is that of the minimum-area rectangle around the footprint,
which has one side along an edge of the footprint's convex hull (Freeman & Shapira, "Determining the
minimum-area encasing rectangle for an arbitrary closed curve", CACM 18(7), 1975; the rotating-calipers
view is Toussaint's, 1983). The hull (Andrew's monotone chain, 1979) is built from the footprint without
points far from its median, and every hull edge's direction is tried; the yaw is then found once more
without the points outside the first box's trimmed extents. Where several rectangles have
nearly the smallest area (a thin board seen from one side has a triangle for a hull), the one with the
most points on its sides wins, the closeness criterion of Zhang et al., "Efficient L-shape fitting for
vehicle detection using laser scanners", IEEE IV 2017.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LAYOUT_FILE = "layout.json"
LAYOUT_FORMAT = "panst3r-layout"
LAYOUT_VERSION = 1
FLOOR_CLASSES = ("floor", "rug", "carpet")
MIN_FLOOR_POINTS = 30
MAX_LEVEL_ANGLE = 45.0  # degrees; a steeper "floor" is more likely a bad fit than a tilted photo
MAX_FLOOR_SAMPLES = 50_000  # a plane needs few points
MIN_BOX_POINTS = 10
MAX_FIT_POINTS = 20_000  # per box; more points do not make percentiles better
MAX_YAW_POINTS = 4_096  # footprint points the hull is built from
TRIM = 0.01  # fraction of points ignored at each end of each axis of a box
NEAR_TIE = 1.05  # rectangles this close to the smallest area are told apart by the points on their sides
CV_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # OpenCV x, z, -y -> x, y, z (Z up)


@dataclass(frozen=True)
class LayoutBox:
    """An oriented box in a Z-up frame: ``size`` along the box's own x (the longer side), y and z (up).

    ``yaw`` (radians, in [-pi/2, pi/2)) turns the frame's +X onto the box's x, counter-clockwise about +Z.
    """

    segment: int
    class_id: int
    class_name: str
    isthing: bool
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    point_count: int

    def corners(self) -> np.ndarray:
        """float64 [8, 3] corners, bottom four first (counter-clockwise seen from above)."""
        half = np.asarray(self.size) / 2
        signs = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], float)
        local = np.concatenate([signs, signs * [1, 1, -1]]) * half
        return local @ yaw_matrix(self.yaw).T + np.asarray(self.centre)

    def to_json(self) -> dict:
        out = asdict(self)
        out["class"] = out.pop("class_name")
        out["yaw_degrees"] = math.degrees(self.yaw)
        return out


@dataclass(frozen=True)
class LevelFrame:
    """Bundle world -> levelled Z-up frame: ``rotation @ x + [0, 0, -floor_height]``."""

    rotation: np.ndarray  # [3, 3]
    floor_height: float  # of the floor in the rotated frame (0 when not levelled)
    levelled: bool
    warning: str = ""

    def matrix(self) -> np.ndarray:
        """[4, 4] bundle world -> levelled frame."""
        out = np.eye(4)
        out[:3, :3], out[2, 3] = self.rotation, -self.floor_height
        return out

    def points(self, xyz: np.ndarray) -> np.ndarray:
        return np.asarray(xyz, np.float64) @ self.rotation.T - np.array([0.0, 0.0, self.floor_height])


def yaw_matrix(yaw: float) -> np.ndarray:
    """[3, 3] rotation by ``yaw`` radians about +Z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- gravity


def reference_rotation(ref_cam_to_world: np.ndarray) -> np.ndarray:
    """[3, 3] rotation making the reference camera look along +Y with its up along +Z."""
    return CV_TO_Z_UP @ np.asarray(ref_cam_to_world, dtype=np.float64)[:3, :3].T


def plane_normal(points: np.ndarray) -> np.ndarray:
    """Unit normal of the least-squares plane, refitted once without the worst residuals."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(2):
        centred = pts - np.median(pts, axis=0)
        normal = np.linalg.svd(centred, full_matrices=False)[2][-1]
        residual = np.abs(centred @ normal)
        keep = residual <= max(2.5 * np.median(residual), 1e-12)
        if keep.sum() < MIN_FLOOR_POINTS:
            break
        pts = pts[keep]
    return normal / np.linalg.norm(normal)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 3] the smallest rotation taking unit vector a onto unit vector b (Rodrigues)."""
    a, b = np.asarray(a, float) / np.linalg.norm(a), np.asarray(b, float) / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(np.dot(a, b))
    if np.linalg.norm(axis) < 1e-12:
        if cos > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + skew + skew @ skew / (1.0 + cos)


def level_rotation(floor_points: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Rotation that makes the floor plane horizontal, given floor points already roughly Z-up.

    Returns:
        ([3, 3] rotation or None, a warning sentence or "").
    """
    if len(floor_points) < MIN_FLOOR_POINTS:
        return None, f"only {len(floor_points)} floor points; the scene was not levelled"
    normal = plane_normal(floor_points)
    if normal[2] < 0:
        normal = -normal
    angle = np.degrees(np.arccos(np.clip(normal[2], -1.0, 1.0)))
    if angle > MAX_LEVEL_ANGLE:
        return None, f"the floor points tilt {angle:.0f}° from horizontal, so the scene was not levelled"
    return rotation_between(normal, np.array([0.0, 0.0, 1.0])), ""


def level_frame(ref_cam_to_world: np.ndarray, floor_xyz: np.ndarray | None = None) -> LevelFrame:
    """The reference camera made upright, then levelled on floor points (bundle world, float [F, 3]) if given."""
    rotation = reference_rotation(ref_cam_to_world)
    if floor_xyz is None or len(floor_xyz) == 0:
        return LevelFrame(rotation, 0.0, False)
    upright = np.asarray(floor_xyz, dtype=np.float64) @ rotation.T
    level, warning = level_rotation(upright)
    if level is None:
        return LevelFrame(rotation, 0.0, False, warning)
    return LevelFrame(level @ rotation, float(np.median(upright @ level[2])), True)


def floor_points(xyz: np.ndarray, segment: np.ndarray, class_of: dict[int, int], names: dict[int, str]) -> np.ndarray:
    """Points of segments whose class is floor-like (:data:`FLOOR_CLASSES`), at most about 50,000 of them."""
    floor = {c for c, name in names.items() if str(name).strip().lower() in FLOOR_CLASSES}
    picked = np.asarray(xyz)[np.isin(segment, [s for s, c in class_of.items() if c in floor])]
    return picked[:: max(1, len(picked) // MAX_FLOOR_SAMPLES)]


# --------------------------------------------------------------------------- boxes


def convex_hull(xy: np.ndarray) -> np.ndarray:
    """float [H, 2] hull vertices, counter-clockwise, of float [N, 2] points (Andrew's monotone chain)."""
    pts = np.unique(np.asarray(xy, np.float64), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(ordered: np.ndarray) -> list:
        chain: list = []
        for p in ordered:
            while len(chain) >= 2 and _turn(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def _turn(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """z of (b - a) x (c - a): positive when a, b, c turn counter-clockwise."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _hull_candidates(xy: np.ndarray) -> np.ndarray:
    """Footprint points that may lie on the hull: those outside the octagon of extreme points
    (Akl & Toussaint's throw-away step, 1978), so the monotone chain sees few points."""
    directions = np.array([[math.cos(a), math.sin(a)] for a in np.arange(8) * math.pi / 4])
    octagon = xy[np.argmax(xy @ directions.T, axis=0)]  # extreme along each direction, counter-clockwise
    inside = np.ones(len(xy), bool)
    for a, b in zip(octagon, np.roll(octagon, -1, axis=0)):
        if np.any(a != b):
            inside &= (b[0] - a[0]) * (xy[:, 1] - a[1]) - (b[1] - a[1]) * (xy[:, 0] - a[0]) > 0
    return xy[~inside]


def _trimmed_extents(xy: np.ndarray, angles: np.ndarray, trim: float) -> tuple[np.ndarray, np.ndarray]:
    """Low and high trimmed extents float [C, 2] of float [M, 2] points along each candidate angle's axes."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u, v = c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]  # [C, M] in each rotated frame
    lo = np.stack([np.quantile(u, trim, axis=1), np.quantile(v, trim, axis=1)], 1)
    hi = np.stack([np.quantile(u, 1 - trim, axis=1), np.quantile(v, 1 - trim, axis=1)], 1)
    return lo, hi


def _without_outliers(xy: np.ndarray, trim: float) -> np.ndarray:
    """Footprint points within 1.5 times the (1 - trim) quantile of the distance to the median point."""
    distance = np.linalg.norm(xy - np.median(xy, axis=0), axis=1)
    return xy[distance <= 1.5 * np.quantile(distance, 1 - trim)]


def footprint_yaw(xy: np.ndarray, trim: float = TRIM) -> float:
    """Yaw in [0, pi/2) of the minimum-area rectangle around float [N, 2] footprint points (module docstring)."""
    xy = np.asarray(xy, np.float64)
    core = _without_outliers(xy[:: max(1, len(xy) // MAX_YAW_POINTS)], trim)
    hull = convex_hull(_hull_candidates(core)) if len(core) >= 3 else core
    if len(hull) < 3:  # collinear: the line's direction
        direction = hull[-1] - hull[0] if len(hull) == 2 else np.array([1.0, 0.0])
        return float(math.atan2(direction[1], direction[0]) % (math.pi / 2))
    edges = np.diff(np.concatenate([hull, hull[:1]]), axis=0)
    angles = np.unique(np.arctan2(edges[:, 1], edges[:, 0]) % (math.pi / 2))
    low, high = _trimmed_extents(hull, angles, 0.0)  # the rectangle touching the hull (Freeman & Shapira)
    area = np.prod(high - low, axis=1)
    near = area <= NEAR_TIE * area.min() + 1e-12  # e.g. every edge of a thin board's triangle-shaped hull
    if near.sum() == 1:
        return float(angles[np.argmin(area)])
    return float(angles[near][np.argmax(_on_sides(core, angles[near], low[near], high[near]))])


def _on_sides(xy: np.ndarray, angles: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """int [C] points of float [M, 2] within 2 % of each rectangle's diagonal from one of its sides."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u, v = c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]
    gap = np.minimum.reduce([u - low[:, :1], high[:, :1] - u, v - low[:, 1:], high[:, 1:] - v])
    return np.count_nonzero(gap <= 0.02 * np.linalg.norm(high - low, axis=1)[:, None], axis=1)


def _inside(xy: np.ndarray, yaw: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """bool [N]: float [N, 2] points inside the rectangle [low, high] of the frame turned by ``yaw``."""
    uv = xy @ yaw_matrix(yaw)[:2, :2]
    return np.all((uv >= low) & (uv <= high), axis=1)


def canonical_yaw(size_x: float, size_y: float, yaw: float) -> tuple[float, float, float]:
    """The same rectangle with x the longer side and yaw in [-pi/2, pi/2): (size_x, size_y, yaw)."""
    if size_x < size_y:
        size_x, size_y, yaw = size_y, size_x, yaw + math.pi / 2
    return size_x, size_y, (yaw + math.pi / 2) % math.pi - math.pi / 2


def fit_box(xyz: np.ndarray, trim: float = TRIM) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Gravity-aligned oriented box of float [N, 3] Z-up points, or None with fewer than 10 finite points.

    Returns:
        (centre [3], size [3] with x >= y, yaw radians in [-pi/2, pi/2)).
    """
    pts = np.asarray(xyz, np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < MIN_BOX_POINTS:
        return None
    pts = pts[:: max(1, len(pts) // MAX_FIT_POINTS)]
    yaw = footprint_yaw(pts[:, :2], trim)
    (lo_uv,), (hi_uv,) = _trimmed_extents(pts[:, :2], np.array([yaw]), trim)
    inside = _inside(pts[:, :2], yaw, lo_uv - 0.02 * (hi_uv - lo_uv), hi_uv + 0.02 * (hi_uv - lo_uv))
    if inside.sum() >= MIN_BOX_POINTS:  # once more without the points the trimmed box leaves out
        yaw = footprint_yaw(pts[inside, :2], trim)
    (lo_uv,), (hi_uv,) = _trimmed_extents(pts[:, :2], np.array([yaw]), trim)
    lo_z, hi_z = np.quantile(pts[:, 2], [trim, 1 - trim])
    mid = yaw_matrix(yaw)[:2, :2] @ ((lo_uv + hi_uv) / 2)
    size_x, size_y, yaw = canonical_yaw(*(hi_uv - lo_uv), yaw)
    return np.array([mid[0], mid[1], (lo_z + hi_z) / 2]), np.array([size_x, size_y, hi_z - lo_z]), yaw


def layout_boxes(
    xyz: np.ndarray,
    segment: np.ndarray,
    segments: dict[int, int],
    classes: dict[int, tuple[str, bool]],
    trim: float = TRIM,
) -> list[LayoutBox]:
    """One box per listed segment with enough points, in the frame of the Z-up points given.

    Args:
        xyz: float [N, 3] points, Z up (e.g. :meth:`LevelFrame.points` of the bundle's).
        segment: int [N] segment id per point (0 = unlabelled, never boxed).
        segments: segment id -> class id.
        classes: class id -> (name, isthing).
    """
    segment = np.asarray(segment)
    order = np.argsort(segment, kind="stable")
    ids, starts = np.unique(segment[order], return_index=True)
    bounds = dict(zip(ids.tolist(), zip(starts.tolist(), [*starts[1:].tolist(), len(order)])))
    boxes = []
    for seg_id, class_id in sorted(segments.items()):
        if seg_id == 0 or seg_id not in bounds:
            continue
        lo, hi = bounds[seg_id]
        fitted = fit_box(np.asarray(xyz)[order[lo:hi]], trim)
        if fitted is None:
            continue
        centre, size, yaw = fitted
        name, isthing = classes.get(class_id, (f"class {class_id}", True))
        boxes.append(LayoutBox(seg_id, class_id, name, isthing, _floats(centre), _floats(size), float(yaw), hi - lo))
    return boxes


def _floats(values: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------- assets


@dataclass(frozen=True)
class Placement:
    """Where an asset goes in a box: ``location``, then ``yaw`` about +Z, then per-axis ``scale``."""

    location: tuple[float, float, float]
    yaw: float
    scale: tuple[float, float, float]


def fit_asset(box: LayoutBox, low: np.ndarray, high: np.ndarray, fill: bool = False, align: bool = True) -> Placement:
    """Put an asset with local bounds [low, high] (its x, y, z; z up) into a box, standing on its bottom.

    Args:
        fill: scale each axis to the box (stretching the asset); otherwise one scale that fits all three.
        align: turn the asset 90° when that lines its longer horizontal side up with the box's (x).
    Raises:
        ValueError: the asset has no extent.
    """
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    extent, size = high - low, np.asarray(box.size, np.float64)
    if not np.all(np.isfinite(extent)) or extent.max() <= 1e-9:
        raise ValueError("the asset has no size; choose a mesh object with geometry")
    turn = align and extent[1] > extent[0]
    target = size[[1, 0, 2]] if turn else size  # the box's size along the asset's own axes
    solid = extent > 1e-9 * extent.max()
    ratios = np.where(solid, target / np.where(solid, extent, 1.0), np.inf)
    scale = np.where(solid, ratios, 1.0) if fill else np.full(3, ratios.min())
    yaw = box.yaw + (math.pi / 2 if turn else 0.0)
    anchor = scale * np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])  # bottom centre
    bottom = np.asarray(box.centre) - [0.0, 0.0, size[2] / 2]
    return Placement(_floats(bottom - yaw_matrix(yaw) @ anchor), float(yaw), _floats(scale))


# --------------------------------------------------------------------------- layout.json


def layout_document(boxes: list[LayoutBox], frame: dict, source: str = "") -> dict:
    """The JSON object of ``layout.json``: a format tag, the frame the boxes are in, and the boxes."""
    return {
        "format": LAYOUT_FORMAT,
        "version": LAYOUT_VERSION,
        "source": source,
        "frame": frame,
        "boxes": [box.to_json() for box in boxes],
    }


def write_layout(document: dict, path: str | os.PathLike) -> Path:
    """Write ``document`` as JSON to ``path`` atomically (a temporary sibling, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def bundle_frame(manifest: dict, points: dict[str, np.ndarray]) -> LevelFrame:
    """The levelled frame of a bundle (manifest and points as both readers hold them)."""
    images = manifest["images"]
    reference = next((i for i, image in enumerate(images) if image.get("keyframe")), 0)
    pose = next(cam["cam_to_world"] for cam in manifest["cameras"] if cam["image"] == reference)
    class_of = {int(s["id"]): int(s["class_id"]) for s in manifest["segments"]}
    names = {int(c["id"]): str(c["name"]) for c in manifest["classes"]}
    return level_frame(pose, floor_points(points["xyz"], points["segment"], class_of, names))


def export_layout(bundle, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/layout.json`` for a read bundle (anything with ``manifest``, ``points`` and ``path``).

    The boxes are in the levelled Z-up frame (:func:`bundle_frame`), in the bundle's units; the frame's
    ``world_to_frame`` matrix maps bundle-world points (OpenCV axes) into it.
    """
    frame = bundle_frame(bundle.manifest, bundle.points)
    classes = {int(c["id"]): (str(c["name"]), bool(c["isthing"])) for c in bundle.manifest["classes"]}
    segments = {int(s["id"]): int(s["class_id"]) for s in bundle.manifest["segments"]}
    boxes = layout_boxes(frame.points(bundle.points["xyz"]), bundle.points["segment"], segments, classes)
    description = {
        "axes": "right-handed, Z up; the reference camera looks along +Y",
        "units": "the bundle's (roughly metres)",
        "levelled": frame.levelled,
        "floor_at_zero": frame.levelled,
        "world_to_frame": frame.matrix().tolist(),
        "up_in_world": frame.rotation[2].tolist(),
        "warning": frame.warning,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_layout(layout_document(boxes, description, Path(bundle.path).name), out / LAYOUT_FILE)
