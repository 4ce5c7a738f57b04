"""Reader for scenes preprocessed by Panoptic Lifting (Replica, Hypersim, ScanNet) into a :class:`SceneDataset`.

Layout, as written by nihalsid/panoptic-lifting's ``dataset/preprocessing``
scripts and read by its ``dataset/panopli.py`` (checked against that code)::

    <scene>/
      color/<stem>.jpg                 photos
      intrinsic/intrinsic_color.txt    4x4 (or 3x3) K, whitespace separated
      pose/<stem>.txt                  4x4 camera-to-world, OpenCV axes (ScanNet poses may hold -inf: skipped)
      depth/<stem>.png                 optional, integer millimetres (uint16; int16 for Hypersim), 0 = invalid
      rs_semantics/<stem>.png          GT classes of the 21-class reduced ScanNet set (0 = void)
      rs_instance/<stem>.png           GT instance ids, non-zero on thing classes only
      semantics/, instance/            raw dataset labels (fallback; their class ids are not the reduced set)
      splits.json                      {"train": [stems], "test": [stems]} (in-the-wild scenes: "val")
      transforms.json                  instant-NGP cameras (in-the-wild captures); used only if pose/ is absent

Not verified here (documented, not relied on): the exact PNG modes of every
distributed scene, and whether ScanNet depth frames were resized to the colour
size. Depth of another size is resized to the photo with nearest neighbour,
which is approximate for ScanNet (its depth camera has its own intrinsics).
Evaluation in Panoptic Lifting uses the ``test`` split's rs_* maps, resized
with nearest neighbour to 512x512; pass ``size=(512, 512)`` to match.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from panst3r_engine.eval.dataset import ClassInfo, DatasetError, InstanceInfo, SceneDataset, View, validate

#: ``resources/scannet_reduced_things.csv``: (name, isthing), class id = index + 1. Spelling as upstream.
REDUCED_SCANNET_CLASSES: tuple[tuple[str, bool], ...] = (
    ("wall", False),
    ("floor", False),
    ("cabinet", False),
    ("bed", True),
    ("chair", True),
    ("sofa", True),
    ("table", False),
    ("door", False),
    ("window", False),
    ("counter", False),
    ("shelves", False),
    ("curtain", False),
    ("ceiling", False),
    ("refridgerator", True),
    ("television", True),
    ("person", True),
    ("toilet", True),
    ("sink", True),
    ("lamp", False),
    ("bag", True),
    ("otherprop", False),
)
#: instant-NGP / NeRF camera axes (x right, y up, z backward) -> OpenCV, as preprocess_itw.py does.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
Split = Literal["train", "test", "all"]


def _frame_stems(root: Path) -> list[str]:
    """Photo stems in Panoptic Lifting's order (numeric when every stem is a number)."""
    stems = [p.stem for p in (root / "color").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return sorted(stems, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))


def _split_stems(root: Path, stems: list[str], split: Split) -> list[str]:
    if split == "all":
        return stems
    path = root / "splits.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no splits.json, so split {split!r} is unknown (use split='all')")
    splits = json.loads(path.read_text())
    key = split if split in splits else ("val" if split == "test" and "val" in splits else None)
    if key is None:
        raise DatasetError(f"{path} has no {split!r} list (keys: {sorted(splits)})")
    wanted = {str(s) for s in splits[key]}
    return [s for s in stems if s in wanted]


def _read_matrix(path: Path) -> np.ndarray:
    rows = [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]
    return np.asarray(rows, np.float64)


def _cameras(root: Path, stems: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """K and camera-to-world per stem, from intrinsic/ + pose/ or else transforms.json."""
    if (root / "pose").is_dir():
        kfile = root / "intrinsic" / "intrinsic_color.txt"
        if not kfile.is_file():
            raise DatasetError(f"{root}: pose/ found but {kfile} is missing")
        k = _read_matrix(kfile)[:3, :3]
        poses = {s: _read_matrix(root / "pose" / f"{s}.txt") for s in stems if (root / "pose" / f"{s}.txt").is_file()}
        return {s: k for s in poses}, poses
    tfile = root / "transforms.json"
    if not tfile.is_file():
        raise DatasetError(f"{root}: no pose/ folder and no transforms.json: cameras unknown")
    t = json.loads(tfile.read_text())
    k = np.array([[t["fl_x"], 0, t["cx"]], [0, t.get("fl_y", t["fl_x"]), t["cy"]], [0, 0, 1]], np.float64)
    poses = {Path(f["file_path"]).stem: np.asarray(f["transform_matrix"], np.float64) @ _GL_TO_CV for f in t["frames"]}
    return {s: k for s in poses}, poses


def _load_labels(root: Path, stem: str, folders: tuple[str, ...]) -> np.ndarray | None:
    for f in folders:
        p = root / f / f"{stem}.png"
        if p.is_file():
            return np.asarray(Image.open(p)).astype(np.int64)
    return None


def _resize(a: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a 2-D map or RGB image to ``size = (W, H)``, keeping the dtype."""
    if a.shape[1::-1] == tuple(size):
        return a
    if a.ndim == 3:
        return np.asarray(Image.fromarray(a).resize(size, resample))
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize(size, resample)).astype(a.dtype)


def _read_frame(
    root: Path, stem: str, K: np.ndarray, c2w: np.ndarray, labels: str, size: tuple[int, int] | None
) -> View:
    photo = next(p for e in (".jpg", ".jpeg", ".png") if (p := root / "color" / f"{stem}{e}").is_file())
    image = np.asarray(Image.open(photo).convert("RGB"))
    h, w = image.shape[:2]
    sem_dirs, inst_dirs = (("rs_semantics",), ("rs_instance",)) if labels == "rs" else (("semantics",), ("instance",))
    sem, inst = _load_labels(root, stem, sem_dirs), _load_labels(root, stem, inst_dirs)
    depth_png = root / "depth" / f"{stem}.png"
    depth = np.asarray(Image.open(depth_png)).astype(np.float32) / 1000.0 if depth_png.is_file() else None
    out_size = size or (w, h)
    k = np.diag([out_size[0] / w, out_size[1] / h, 1.0]) @ K
    image = _resize(image, out_size, Image.LANCZOS)
    depth = None if depth is None else np.clip(_resize(depth, out_size, Image.NEAREST), 0, None)
    sem = None if sem is None else _resize(sem, out_size, Image.NEAREST).astype(np.uint16)
    inst = None if inst is None else _resize(inst, out_size, Image.NEAREST).astype(np.uint16)
    image_file = str(photo.relative_to(root)) if size is None else None  # resized photos are new images
    return View(stem, k, c2w, image, depth, sem, inst, image_file=image_file)


def _instances(views: list[View], classes: list[ClassInfo]) -> list[InstanceInfo]:
    """Instance list with each id's majority class over the loaded views (Panoptic Lifting's rule)."""
    votes: dict[int, Counter] = {}
    for v in views:
        if v.semantic is None or v.instance is None:
            continue
        ids, inv = np.unique(v.instance, return_inverse=True)
        for j, i in enumerate(ids):
            if i:
                cls, n = np.unique(v.semantic.reshape(-1)[inv.reshape(-1) == j], return_counts=True)
                votes.setdefault(int(i), Counter()).update(dict(zip(cls.tolist(), n.tolist(), strict=True)))
    names = {c.id: c.name for c in classes}
    out = []
    for i in sorted(votes):
        c = votes[i].most_common(1)[0][0]
        out.append(InstanceInfo(i, int(c), f"{names.get(int(c), 'void')}_{i}"))
    return out


def read_panoptic_lifting(
    path: str | os.PathLike,
    split: Split = "test",
    labels: Literal["rs", "raw"] = "rs",
    size: tuple[int, int] | None = None,
    classes: list[ClassInfo] | None = None,
    max_views: int | None = None,
) -> SceneDataset:
    """A Panoptic Lifting scene folder as a :class:`SceneDataset` (frames of one split, in frame order).

    ``labels='rs'`` reads rs_semantics/rs_instance with the 21 reduced ScanNet
    classes; ``'raw'`` reads semantics/instance, whose class ids are the
    dataset's own: give ``classes`` then (default: one thing class per id
    seen, named ``class_<id>``). ``size=(W, H)`` resizes photos (Lanczos),
    labels and depth (nearest) and scales K. Frames without a finite pose
    are skipped and listed in ``meta['skipped']``.
    """
    root = Path(path)
    if not (root / "color").is_dir():
        raise DatasetError(f"{root} is not a Panoptic Lifting scene folder (no color/)")
    stems = _split_stems(root, _frame_stems(root), split)
    ks, poses = _cameras(root, stems)
    usable = [s for s in stems if s in poses and np.isfinite(poses[s]).all()]
    skipped = [s for s in stems if s not in usable]
    usable = usable[:max_views] if max_views else usable
    if not usable:
        raise DatasetError(f"{root}: no frame of split {split!r} has a usable pose")
    views = [_read_frame(root, s, ks[s], poses[s], labels, size) for s in usable]
    if classes is None:
        if labels == "rs":
            classes = [ClassInfo(i + 1, n, t) for i, (n, t) in enumerate(REDUCED_SCANNET_CLASSES)]
        else:
            seen = sorted({int(c) for v in views if v.semantic is not None for c in np.unique(v.semantic)} - {0})
            classes = [ClassInfo(c, f"class_{c}", True) for c in seen]
    scene = SceneDataset(
        classes,
        _instances(views, classes),
        views,
        seed=None,
        meta={"source": "panoptic-lifting", "root": str(root), "split": split, "labels": labels, "skipped": skipped},
    )
    validate(scene)
    return scene
