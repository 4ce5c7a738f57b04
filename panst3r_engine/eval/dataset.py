"""Benchmark scene folders: ground truth for geometry and panoptic evaluation.

Format ``panst3r-synthetic-1`` (written by the synthetic generator, also the
target of the Panoptic Lifting reader)::

    <scene>/
      scene.json      {"format": "panst3r-synthetic-1", "seed", "classes": [{"id", "name", "isthing"}],
                       "instances": [{"id", "class_id", "name"}],
                       "views": [{"stem", "width", "height", "K", "cam_to_world"}]}
      images/<stem>.png     RGB uint8
      depth/<stem>.npy      float32 [H, W], z-depth in metres along the camera axis, 0 = no hit
      semantic/<stem>.png   uint16 class ids, 0 = void
      instance/<stem>.png   uint16 instance ids, 0 = none

- Class ids are 1-based indices into ``classes`` (0 = void); stuff classes
  (walls, floor) still get instance ids, ``isthing`` says how to score them.
- ``K`` is 3x3 in pixel *index* coordinates (pixel (col, row) sits at
  (col, row); the engine's principal point convention is (W/2, H/2)).
- ``cam_to_world`` is 4x4 with OpenCV camera axes (x right, y down, z forward);
  the world frame is the scene's own (the generator's is Blender's, Z up).
- Optional per view: ``"image"`` (photo path relative to the folder, any
  format PIL reads; default ``images/<stem>.png``). ``depth/``, ``semantic/``
  and ``instance/`` may be absent (e.g. the Panoptic Lifting data without depth).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from panst3r_engine.errors import PanSt3RError

FORMAT = "panst3r-synthetic-1"


class DatasetError(PanSt3RError):
    """A scene folder that cannot be read or written, with the reason."""

    code = "bad_dataset"


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    isthing: bool


@dataclass(frozen=True)
class InstanceInfo:
    id: int
    class_id: int
    name: str


@dataclass
class View:
    """One posed photo with its optional ground-truth maps (all ``[H, W]`` but the image)."""

    stem: str
    K: np.ndarray  # [3, 3] float64
    cam_to_world: np.ndarray  # [4, 4] float64, OpenCV axes
    image: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray | None = None  # [H, W] float32, metres, 0 = no hit
    semantic: np.ndarray | None = None  # [H, W] uint16, 0 = void
    instance: np.ndarray | None = None  # [H, W] uint16, 0 = none
    image_file: str | None = None  # photo path relative to the scene folder, if not images/<stem>.png

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class SceneDataset:
    classes: list[ClassInfo]
    instances: list[InstanceInfo]
    views: list[View]
    seed: int | None = None
    meta: dict = field(default_factory=dict)  # free-form provenance (source format, split, ...)

    @property
    def thing_classes(self) -> list[int]:
        return [c.id for c in self.classes if c.isthing]

    @property
    def stuff_classes(self) -> list[int]:
        return [c.id for c in self.classes if not c.isthing]

    def class_of_instance(self) -> dict[int, int]:
        return {i.id: i.class_id for i in self.instances}

    def view_index(self, stem: str) -> int:
        for i, v in enumerate(self.views):
            if v.stem == stem:
                return i
        raise KeyError(f"no view {stem!r} in this scene")


# --------------------------------------------------------------------------- checks


def _check_view(v: View) -> None:
    """Raise DatasetError for maps whose shape or dtype does not fit the photo."""
    if v.image.ndim != 3 or v.image.shape[2] != 3 or v.image.dtype != np.uint8:
        raise DatasetError(f"view {v.stem}: image must be [H, W, 3] uint8, got {v.image.shape} {v.image.dtype}")
    if np.shape(v.K) != (3, 3) or np.shape(v.cam_to_world) != (4, 4):
        raise DatasetError(f"view {v.stem}: K must be 3x3 and cam_to_world 4x4")
    for name in ("depth", "semantic", "instance"):
        a = getattr(v, name)
        if a is not None and a.shape != v.image.shape[:2]:
            raise DatasetError(f"view {v.stem}: {name} is {a.shape}, the image is {v.image.shape[:2]}")


def validate(scene: SceneDataset) -> None:
    """Raise DatasetError when ids, stems or view shapes are inconsistent."""
    class_ids = [c.id for c in scene.classes]
    if len(set(class_ids)) != len(class_ids) or 0 in class_ids:
        raise DatasetError("class ids must be unique and non-zero (0 is void)")
    inst_ids = [i.id for i in scene.instances]
    if len(set(inst_ids)) != len(inst_ids) or 0 in inst_ids:
        raise DatasetError("instance ids must be unique and non-zero")
    unknown = {i.class_id for i in scene.instances} - set(class_ids)
    if unknown:
        raise DatasetError(f"instances refer to unknown class ids {sorted(unknown)}")
    stems = [v.stem for v in scene.views]
    if len(set(stems)) != len(stems):
        raise DatasetError("view stems must be unique")
    for v in scene.views:
        _check_view(v)


# --------------------------------------------------------------------------- write


def _save_u16(path: Path, a: np.ndarray) -> None:
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise DatasetError(f"{path.name}: ids must lie in [0, 65535]")
    Image.fromarray(np.ascontiguousarray(a, dtype=np.uint16)).save(path)


def _view_json(v: View) -> dict:
    d = {
        "stem": v.stem,
        "width": v.width,
        "height": v.height,
        "K": np.asarray(v.K, float).tolist(),
        "cam_to_world": np.asarray(v.cam_to_world, float).tolist(),
    }
    if v.image_file:
        d["image"] = v.image_file
    return d


def _write_into(scene: SceneDataset, root: Path) -> None:
    meta = {
        "format": FORMAT,
        "seed": scene.seed,
        "classes": [{"id": c.id, "name": c.name, "isthing": c.isthing} for c in scene.classes],
        "instances": [{"id": i.id, "class_id": i.class_id, "name": i.name} for i in scene.instances],
        "views": [_view_json(v) for v in scene.views],
        "meta": scene.meta,
    }
    (root / "scene.json").write_text(json.dumps(meta, indent=1))
    for v in scene.views:
        img_path = root / (v.image_file or f"images/{v.stem}.png")
        img_path.parent.mkdir(parents=True, exist_ok=True)
        jpeg = img_path.suffix.lower() in (".jpg", ".jpeg")
        Image.fromarray(v.image).save(img_path, **({"quality": 90} if jpeg else {}))
        if v.depth is not None:
            (root / "depth").mkdir(exist_ok=True)
            np.save(root / "depth" / f"{v.stem}.npy", np.asarray(v.depth, np.float32))
        for name in ("semantic", "instance"):
            a = getattr(v, name)
            if a is not None:
                (root / name).mkdir(exist_ok=True)
                _save_u16(root / name / f"{v.stem}.png", a)


def write_scene(scene: SceneDataset, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``scene`` as a folder at ``path`` (atomically: temp folder, then rename).

    An existing folder is replaced only if it is empty or is itself a scene
    folder (has ``scene.json``) and ``overwrite`` is set; anything else is
    refused so a wrong path never deletes unrelated files.
    """
    validate(scene)
    path = Path(path)
    if path.exists():
        is_scene = (path / "scene.json").is_file()
        if not path.is_dir() or (any(path.iterdir()) and not (overwrite and is_scene)):
            raise DatasetError(f"{path} exists and is not an empty or replaceable scene folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a scene folder is an ordinary folder
    try:
        _write_into(scene, tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------- read


def _load_u16(path: Path) -> np.ndarray | None:
    return np.asarray(Image.open(path)).astype(np.uint16) if path.is_file() else None


def _read_view(root: Path, d: dict) -> View:
    stem = str(d["stem"])
    image_file = d.get("image")
    img_path = root / (image_file or f"images/{stem}.png")
    if not img_path.is_file():
        raise DatasetError(f"view {stem}: photo {img_path} is missing")
    image = np.asarray(Image.open(img_path).convert("RGB"))
    depth_path = root / "depth" / f"{stem}.npy"
    depth = np.load(depth_path).astype(np.float32) if depth_path.is_file() else None
    v = View(
        stem,
        np.asarray(d["K"], np.float64),
        np.asarray(d["cam_to_world"], np.float64),
        image,
        depth,
        _load_u16(root / "semantic" / f"{stem}.png"),
        _load_u16(root / "instance" / f"{stem}.png"),
        image_file,
    )
    if (v.width, v.height) != (int(d.get("width", v.width)), int(d.get("height", v.height))):
        raise DatasetError(f"view {stem}: photo is {v.width}x{v.height}, scene.json says {d['width']}x{d['height']}")
    return v


def read_scene(path: str | os.PathLike, stems: list[str] | None = None) -> SceneDataset:
    """Read a ``panst3r-synthetic-1`` folder (all views, or only ``stems`` in that order)."""
    root = Path(path)
    meta_path = root / "scene.json"
    if not meta_path.is_file():
        raise DatasetError(f"{root} is not a scene folder (no scene.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path} is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    by_stem = {str(d["stem"]): d for d in meta["views"]}
    missing = [s for s in stems or [] if s not in by_stem]
    if missing:
        raise DatasetError(f"{root}: no views {missing}")
    scene = SceneDataset(
        classes=[ClassInfo(int(c["id"]), str(c["name"]), bool(c["isthing"])) for c in meta["classes"]],
        instances=[InstanceInfo(int(i["id"]), int(i["class_id"]), str(i["name"])) for i in meta["instances"]],
        views=[_read_view(root, by_stem[s]) for s in (stems or list(by_stem))],
        seed=meta.get("seed"),
        meta=dict(meta.get("meta") or {}),
    )
    validate(scene)
    return scene


# --------------------------------------------------------------------------- ground truth


def panoptic_ground_truth(scene: SceneDataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-view semantic and instance maps (int64 ``[H, W]``) as ``panoptic_quality_scene`` takes them.

    Pass ``scene.thing_classes`` and ``scene.stuff_classes`` as its class sets.
    """
    sem, inst = [], []
    for v in scene.views:
        if v.semantic is None or v.instance is None:
            raise DatasetError(f"view {v.stem} has no semantic/instance ground truth")
        sem.append(v.semantic.astype(np.int64))
        inst.append(v.instance.astype(np.int64))
    return sem, inst


def depth_to_camera_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[H, W, 3]`` (OpenCV axes) from z-depth; NaN where depth is 0 or not finite."""
    h, w = depth.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    k = np.asarray(K, np.float64)
    z = np.where((depth > 0) & np.isfinite(depth), depth, np.nan).astype(np.float64)
    x = (cols - k[0, 2] - k[0, 1] * (rows - k[1, 2]) / k[1, 1]) / k[0, 0] * z
    y = (rows - k[1, 2]) / k[1, 1] * z
    return np.stack([x, y, z], -1)


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points ``[..., 3]``."""
    T = np.asarray(T, np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


def relative_poses(scene: SceneDataset, reference: int = 0) -> np.ndarray:
    """Camera-to-reference-camera ``[V, 4, 4]``: poses in the engine's frame (world = reference camera)."""
    ref_inv = np.linalg.inv(scene.views[reference].cam_to_world)
    return np.stack([ref_inv @ v.cam_to_world for v in scene.views])


def gt_pointmaps(scene: SceneDataset, view: int | str, reference: int | None = None) -> np.ndarray:
    """Ground-truth pointmap ``[H, W, 3]`` of one view from depth, K and pose; NaN where no depth.

    World coordinates by default; with ``reference`` the points are in that
    view's camera frame (the engine's world frame when it is the first keyframe).
    """
    v = scene.views[scene.view_index(view) if isinstance(view, str) else view]
    if v.depth is None:
        raise DatasetError(f"view {v.stem} has no depth")
    T = v.cam_to_world if reference is None else np.linalg.inv(scene.views[reference].cam_to_world) @ v.cam_to_world
    return transform_points(depth_to_camera_points(v.depth, v.K), T)


def project(points: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``[..., 2]`` (col, row) and camera z ``[...]`` of world points ``[..., 3]``."""
    pc = transform_points(points, np.linalg.inv(cam_to_world))
    k = np.asarray(K, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ k.T)[..., :2] / pc[..., 2:3]
    return uv, pc[..., 2]
