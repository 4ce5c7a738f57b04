"""Seeded layout of a synthetic room: geometry, materials, lights and cameras (no bpy).

Everything Blender needs to build a benchmark scene is decided here, in plain
numpy, so the layout is reproducible from a seed and testable without Blender.
World frame: Blender's (metres, Z up, floor at z = 0, room centred on x = y = 0).
Cameras are OpenCV camera-to-world matrices with K in the engine's pixel
convention (see :mod:`camera_conventions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from panst3r_engine.eval.camera_conventions import blender_intrinsics, look_at, pixel_centre_shift

#: Class list of the synthetic scenes: names from the ScanNet++ top-100
#: semantic vocabulary (as hard-coded in PanSt3R's demo), ``(name, isthing)``.
#: Class id = index + 1 (0 = void). ScanNet++ has "table lamp"/"ceiling lamp", no plain "lamp".
SYNTHETIC_CLASSES: tuple[tuple[str, bool], ...] = (
    ("wall", False),
    ("floor", False),
    ("ceiling", False),
    ("door", True),
    ("window", True),
    ("table", True),
    ("chair", True),
    ("cabinet", True),
    ("bed", True),
    ("sofa", True),
    ("table lamp", True),
    ("bookshelf", True),
    ("box", True),
    ("trash can", True),
)
CLASS_ID = {name: i + 1 for i, (name, _) in enumerate(SYNTHETIC_CLASSES)}
FURNITURE = ("table", "chair", "cabinet", "bed", "sofa", "table lamp", "bookshelf", "box", "trash can")
AGAINST_WALL = {"cabinet", "bed", "sofa", "bookshelf"}
CameraPath = Literal["orbit", "walk"]
WALL_T = 0.1  # wall/floor/ceiling slab thickness, m


@dataclass(frozen=True)
class Part:
    """One primitive in its object's frame (origin on the floor, +y = front).

    box: ``size`` = full extents (x, y, z); cylinder: (bottom radius, top radius, height).
    ``center`` is the primitive's centre (z measured from the floor).
    """

    kind: Literal["box", "cylinder"]
    size: tuple[float, float, float]
    center: tuple[float, float, float]


@dataclass(frozen=True)
class MaterialSpec:
    """Diffuse material with a procedural pattern, so photos have texture to match."""

    pattern: Literal["noise", "wave", "checker", "voronoi"]
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale: float
    roughness: float = 0.6
    emission: float = 0.0  # strength; > 0 for glowing windows


#: Pale checkered glass that glows a little (a window in a closed room).
WINDOW_MATERIAL = MaterialSpec("checker", (0.85, 0.92, 1.0), (0.55, 0.65, 0.8), 4.0, 0.2, 0.25)


@dataclass
class SceneObject:
    name: str
    class_name: str
    parts: list[Part]
    location: tuple[float, float, float]
    yaw: float  # radians about +z
    material: MaterialSpec
    instance_id: int = 0

    @property
    def class_id(self) -> int:
        return CLASS_ID[self.class_name]


@dataclass(frozen=True)
class LightSpec:
    kind: Literal["AREA", "POINT"]
    location: tuple[float, float, float]
    energy: float  # watts
    size: float = 0.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class RoomLayout:
    size: tuple[float, float, float]  # x extent, y extent, height (interior), m
    objects: list[SceneObject]
    lights: list[LightSpec]
    cam_to_world: np.ndarray  # [V, 4, 4] OpenCV axes
    K: np.ndarray  # [3, 3]
    width: int
    height: int
    lens_mm: float
    sensor_mm: float = 36.0
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- cameras


def camera_eyes(path: CameraPath, n: int, room: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Camera centres ``[n, 3]`` inside the room for an 'orbit' (ellipse round the centre) or a 'walk'."""
    rx, ry, _ = room
    z = 1.5 + rng.uniform(-0.1, 0.1, n)
    if path == "orbit":
        t = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
        return np.stack([0.3 * rx * np.cos(t), 0.3 * ry * np.sin(t), z], 1)
    if path == "walk":
        x = np.linspace(-0.3 * rx, 0.3 * rx, n) if n > 1 else np.zeros(1)
        y = np.full(n, -0.5 * ry + 0.9) + rng.uniform(-0.05, 0.05, n)
        return np.stack([x, y, z], 1)
    raise ValueError(f"unknown camera path {path!r}; use 'orbit' or 'walk'")


# --------------------------------------------------------------------------- objects


def _box(sx: float, sy: float, sz: float, cx: float = 0.0, cy: float = 0.0, z0: float = 0.0) -> Part:
    """Box of extents (sx, sy, sz) whose bottom sits at height z0."""
    return Part("box", (sx, sy, sz), (cx, cy, z0 + sz / 2))


def _legs(sx: float, sy: float, h: float, t: float = 0.05) -> list[Part]:
    return [_box(t, t, h, sgx * (sx - t) / 2, sgy * (sy - t) / 2) for sgx in (-1, 1) for sgy in (-1, 1)]


def furniture_parts(kind: str, rng: np.random.Generator) -> list[Part]:
    """Primitives of one furniture piece, sizes jittered by the seed (front faces +y)."""
    j = lambda v: float(v * rng.uniform(0.9, 1.1))  # noqa: E731
    if kind == "table":
        sx, sy, h = j(1.2), j(0.8), j(0.74)
        return [_box(sx, sy, 0.05, z0=h - 0.05), *_legs(sx, sy, h - 0.05)]
    if kind == "chair":
        s, h = j(0.45), j(0.45)
        back = _box(s, 0.05, j(0.45), 0, -(s - 0.05) / 2, h)
        return [_box(s, s, 0.05, z0=h - 0.05), *_legs(s, s, h - 0.05, 0.04), back]
    if kind == "cabinet":
        sx, sy, h = j(0.8), j(0.45), j(1.5)
        handle, gap = _box(0.03, 0.03, 0.2, 0.08, sy / 2 + 0.015, h * 0.55), _box(0.02, 0.01, h - 0.1, 0, sy / 2, 0.05)
        return [_box(sx, sy, h), handle, gap]
    if kind == "bed":
        sx, sy = j(1.4), j(2.0)
        head = _box(sx, 0.08, j(1.0), 0, -sy / 2 + 0.04)
        return [_box(sx, sy, 0.45), head, _box(sx * 0.6, 0.35, 0.12, 0, -sy / 2 + 0.3, 0.45)]
    if kind == "sofa":
        sx, sy = j(1.8), j(0.85)
        arm = [_box(0.2, sy, 0.62, sg * (sx - 0.2) / 2) for sg in (-1, 1)]
        return [_box(sx - 0.4, sy - 0.2, 0.42, 0, 0.1), _box(sx, 0.2, 0.85, 0, -(sy - 0.2) / 2), *arm]
    if kind == "table lamp":
        base = Part("cylinder", (0.09, 0.09, 0.03), (0, 0, 0.015))
        pole = Part("cylinder", (0.015, 0.015, 0.35), (0, 0, 0.2))
        return [base, pole, Part("cylinder", (0.17, 0.1, 0.2), (0, 0, 0.42))]
    if kind == "bookshelf":
        sx, sy, h = j(0.9), j(0.32), j(1.8)
        sides = [_box(0.03, sy, h, sg * (sx - 0.03) / 2) for sg in (-1, 1)]
        shelves = [_box(sx - 0.06, sy, 0.03, z0=z) for z in np.linspace(0.02, h - 0.03, 5)]
        levels = np.linspace(0.02, h - 0.03, 5)
        books = [_box(j(0.5), sy * 0.7, j(0.22), rng.uniform(-0.1, 0.1), 0, z + 0.05) for z in levels[:-1]]
        return [*sides, *shelves, _box(sx, 0.02, h, 0, -(sy - 0.02) / 2), *books]
    if kind == "box":
        return [_box(j(0.45), j(0.35), j(0.32))]
    if kind == "trash can":
        return [Part("cylinder", (0.15, 0.17, 0.38), (0, 0, 0.19))]
    raise ValueError(f"unknown furniture kind {kind!r}")


def footprint(parts: list[Part]) -> tuple[float, float, float]:
    """Half extents (x, y) and height of the parts' bounding box in the object frame."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for p in parts:
        half = np.array([p.size[0], p.size[1], p.size[2] / 2]) if p.kind == "cylinder" else np.array(p.size) / 2
        if p.kind == "cylinder":
            half[:2] = max(p.size[0], p.size[1])
        lo, hi = np.minimum(lo, np.array(p.center) - half), np.maximum(hi, np.array(p.center) + half)
    return float(max(-lo[0], hi[0])), float(max(-lo[1], hi[1])), float(hi[2])


def random_material(rng: np.random.Generator, kind: str = "furniture") -> MaterialSpec:
    """Seeded two-colour procedural material; walls stay pale, furniture is saturated."""
    pattern = {"wall": "noise", "floor": "wave", "ceiling": "noise"}.get(kind) or str(
        rng.choice(["noise", "checker", "voronoi", "wave"])
    )
    hue = rng.uniform()
    sat, val = (
        (rng.uniform(0.05, 0.2), rng.uniform(0.6, 0.85))
        if kind in ("wall", "ceiling")
        else (rng.uniform(0.35, 0.8), rng.uniform(0.3, 0.7))
    )
    a = _hsv(hue, sat, val)
    b = _hsv((hue + rng.uniform(-0.08, 0.08)) % 1, sat * rng.uniform(0.6, 1.2), val * rng.uniform(0.45, 0.75))
    scale = {"wall": 3.0, "ceiling": 2.0, "floor": 2.0}.get(kind, rng.uniform(3.0, 8.0))
    return MaterialSpec(pattern, a, b, float(scale), float(rng.uniform(0.4, 0.9)))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(float(min(max(c, 0.0), 1.0)) for c in rgb)


# --------------------------------------------------------------------------- room


def _wall_frame(w: int, room: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Interior surface centre (x, y), inward normal and length of wall ``w`` (0 = -y, 1 = +x, 2 = +y, 3 = -x)."""
    rx, ry, _ = room
    normal = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], np.float64)[w]
    centre = -normal * np.array([rx, ry]) / 2
    return centre, normal, (rx if w % 2 == 0 else ry)


def _yaw_facing(normal: np.ndarray) -> float:
    """Yaw that turns an object's front (+y) towards ``normal``."""
    return float(math.atan2(normal[1], normal[0]) - math.pi / 2)


def _aabb(xy: np.ndarray, yaw: float, hx: float, hy: float, pad: float = 0.0) -> np.ndarray:
    """World-axis bounding box ``[xmin, ymin, xmax, ymax]`` of a rotated footprint."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    ex, ey = c * hx + s * hy + pad, s * hx + c * hy + pad
    return np.array([xy[0] - ex, xy[1] - ey, xy[0] + ex, xy[1] + ey])


def _overlaps(box: np.ndarray, others: list[np.ndarray]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def structure(room: tuple[float, float, float], rng: np.random.Generator) -> tuple[list[SceneObject], list[np.ndarray]]:
    """Floor, ceiling, four walls, a door and a window; also the floor areas to keep clear."""
    rx, ry, h = room
    t = WALL_T
    slab = lambda z0: [_box(rx + 2 * t, ry + 2 * t, t, z0=z0)]  # noqa: E731
    objs = [
        SceneObject("floor", "floor", slab(-t), (0, 0, 0), 0.0, random_material(rng, "floor")),
        SceneObject("ceiling", "ceiling", slab(h), (0, 0, 0), 0.0, random_material(rng, "ceiling")),
    ]
    wall_mat = random_material(rng, "wall")
    for w in range(4):
        centre, normal, length = _wall_frame(w, room)
        loc = centre - normal * t / 2
        parts = [_box(length + 2 * t, t, h)]
        objs.append(SceneObject(f"wall_{w}", "wall", parts, (*loc, 0.0), _yaw_facing(normal), wall_mat))
    door_wall, window_wall = (int(v) for v in rng.choice(4, 2, replace=False))
    keep_clear = []
    for name, w, width, hgt, z0, mat in (
        ("door", door_wall, 0.9, 2.05, 0.0, random_material(rng)),
        ("window", window_wall, 1.2, 1.1, 0.95, WINDOW_MATERIAL),
    ):
        centre, normal, length = _wall_frame(w, room)
        along = np.array([-normal[1], normal[0]])
        s = rng.uniform(-(length / 2 - width / 2 - 0.3), length / 2 - width / 2 - 0.3)
        xy = centre + along * s + normal * 0.02
        objs.append(SceneObject(name, name, [_box(width, 0.05, hgt, z0=z0)], (*xy, 0.0), _yaw_facing(normal), mat))
        if name == "door":
            keep_clear.append(_aabb(xy + normal * 0.5, _yaw_facing(normal), width / 2 + 0.1, 0.5))
    return objs, keep_clear


def _place(kind: str, parts: list[Part], room, occupied, eyes, rng) -> tuple[np.ndarray, float] | None:
    """A collision-free floor position and yaw for one piece, or None after 200 tries."""
    hx, hy, top = footprint(parts)
    rx, ry, _ = room
    for _ in range(200):
        if kind in AGAINST_WALL:
            w = int(rng.integers(4))
            centre, normal, length = _wall_frame(w, room)
            if length / 2 - hx - 0.05 <= 0:
                continue
            along = np.array([-normal[1], normal[0]])
            xy = centre + along * rng.uniform(-(length / 2 - hx - 0.05), length / 2 - hx - 0.05) + normal * (hy + 0.01)
            yaw = _yaw_facing(normal)
        else:
            yaw = float(rng.uniform(-math.pi, math.pi))
            r = max(hx, hy) + 0.05
            xy = np.array([rng.uniform(-rx / 2 + r, rx / 2 - r), rng.uniform(-ry / 2 + r, ry / 2 - r)])
        box = _aabb(xy, yaw, hx, hy)
        near_cam = _aabb(xy, yaw, hx, hy, pad=0.4)
        inside = bool(np.all(np.abs(box) <= np.array([rx, ry, rx, ry]) / 2 + 1e-6))
        cams_ok = top < eyes[:, 2].min() - 0.3 or not any(  # cameras may look over low pieces
            near_cam[0] < e[0] < near_cam[2] and near_cam[1] < e[1] < near_cam[3] for e in eyes
        )
        if inside and cams_ok and not _overlaps(_aabb(xy, yaw, hx, hy, pad=0.05), occupied):
            return xy, yaw
    return None


def _pick_kinds(rng: np.random.Generator) -> tuple[int, list[str]]:
    """How many pieces to place (3-6) and every kind in the order to try them (big wall pieces first)."""
    n = int(rng.integers(3, 7))
    kinds = [str(k) for k in rng.permutation(FURNITURE)]
    head = kinds[:n]
    if "table lamp" in head and "table" not in head:  # a lamp needs its table
        head[head.index("table lamp")] = "table"
        kinds.remove("table")
        kinds.insert(kinds.index("table lamp") + 1, "table lamp")
    order = sorted(head, key=lambda k: (k == "table lamp", k not in AGAINST_WALL)) + [k for k in kinds if k not in head]
    return n, order


def _on_table(table: SceneObject, parts: list[Part], rng: np.random.Generator) -> SceneObject:
    """A table lamp standing at a random spot of the table top."""
    thx, thy, th = footprint(table.parts)
    off = np.array([rng.uniform(-thx + 0.2, thx - 0.2), rng.uniform(-thy + 0.2, thy - 0.2)])
    c, s = math.cos(table.yaw), math.sin(table.yaw)
    xy = np.array(table.location[:2]) + np.array([c * off[0] - s * off[1], s * off[0] + c * off[1]])
    return SceneObject(
        "table lamp",
        "table lamp",
        parts,
        (float(xy[0]), float(xy[1]), th),
        float(rng.uniform(-math.pi, math.pi)),
        random_material(rng),
    )


def furniture(room, occupied: list[np.ndarray], eyes: np.ndarray, rng: np.random.Generator) -> list[SceneObject]:
    """3-6 seeded furniture pieces (kinds that do not fit are replaced by others); a lamp stands on the table."""
    n, order = _pick_kinds(rng)
    objs: list[SceneObject] = []
    for kind in order:
        if len(objs) == n:
            break
        parts = furniture_parts(kind, rng)
        if kind == "table lamp":
            table = next((o for o in objs if o.class_name == "table"), None)
            if table is not None:
                objs.append(_on_table(table, parts, rng))
            continue
        spot = _place(kind, parts, room, occupied, eyes, rng)
        if spot is None:
            continue
        xy, yaw = spot
        hx, hy, _ = footprint(parts)
        occupied.append(_aabb(xy, yaw, hx, hy))
        objs.append(SceneObject(kind, kind, parts, (float(xy[0]), float(xy[1]), 0.0), yaw, random_material(rng)))
    return objs


def lights(room: tuple[float, float, float], rng: np.random.Generator) -> list[LightSpec]:
    """A ceiling area light plus a warm point light, energies scaled with the floor area."""
    rx, ry, h = room
    area = rx * ry
    p = (float(rng.uniform(-rx / 3, rx / 3)), float(rng.uniform(-ry / 3, ry / 3)), h - 0.4)
    return [
        LightSpec("AREA", (0.0, 0.0, h - 0.02), 6.0 * area, size=1.5),
        LightSpec("POINT", p, 2.5 * area, color=(1.0, 0.85, 0.7)),
    ]


def sample_layout(
    seed: int = 0, num_views: int = 6, width: int = 128, height: int = 96, path: CameraPath = "orbit"
) -> RoomLayout:
    """The whole seeded scene: room, furniture, lights and ``num_views`` cameras looking at the centre."""
    if num_views < 1 or width < 8 or height < 8:
        raise ValueError(f"need num_views >= 1 and an image of at least 8x8, got {num_views} views of {width}x{height}")
    rng = np.random.default_rng(seed)
    room = (float(rng.uniform(4.5, 6.0)), float(rng.uniform(3.8, 5.0)), float(rng.uniform(2.5, 2.9)))
    eyes = camera_eyes(path, num_views, room, rng)
    target = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 1.0])
    c2w = np.stack([look_at(e, target) for e in eyes])
    lens = float(rng.uniform(20.0, 26.0))
    objs, occupied = structure(room, rng)
    objs += furniture(room, occupied, eyes, rng)
    for i, o in enumerate(objs):
        o.instance_id = i + 1
    k = blender_intrinsics(lens, 36.0, width, height, *pixel_centre_shift(width, height))
    return RoomLayout(
        room,
        objs,
        lights(room, rng),
        c2w,
        k,
        width,
        height,
        lens,
        meta={"seed": seed, "path": path, "target": target.tolist()},
    )
