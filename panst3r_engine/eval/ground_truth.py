"""Ground-truth result bundles from synthetic scene folders, and splat quality on held-out views (no bpy).

A ``panst3r-synthetic-1`` scene (:mod:`panst3r_engine.eval.dataset`, e.g. rendered by
:mod:`panst3r_engine.eval.synthetic`) has exact cameras, depth and instance/class maps. The splat layer's
benchmark and tests turn its *training* views into the bundle a perfect reconstruction would write:

* points: every ``stride``-th pixel (in x and y) with a depth hit, back-projected with the view's K and pose;
  colour from the photo, segment = the instance id, its class from the scene's instance list;
* cameras: the ground-truth K and cam_to_world; images: the photos; panoptic maps: the instance maps.

The held-out views are then rendered from the fitted Gaussians and compared with their photos (PSNR) and label
maps (instance and class pixel accuracy) by :func:`evaluate_views`.

Frames and pixels: the bundle keeps the scene's own world frame (the splat layer does not care which frame;
an engine bundle's world is its first keyframe's camera). The scene's K is in pixel *index* coordinates
(pixel (col, row) sits at (col, row)) while bundles and the splat renderer put pixel centres at +0.5, so
:func:`splat_K` adds half a pixel to the principal point.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.eval.dataset import SceneDataset, View, gt_pointmaps, read_scene
from panst3r_engine.splats.fit import psnr
from panst3r_engine.splats.render import render

__all__ = ["ViewScores", "bundle_from_scene", "evaluate_views", "holdout_split", "majority_baseline", "splat_K"]


def splat_K(K: np.ndarray) -> np.ndarray:
    """K of a scene view (index coordinates) in the bundle's convention (pixel centres at +0.5)."""
    out = np.array(K, np.float64)
    out[0, 2] += 0.5
    out[1, 2] += 0.5
    return out


def holdout_split(num_views: int, every: int, offset: int | None = None) -> tuple[list[int], list[int]]:
    """(training, held-out) view indices: every ``every``-th view is held out, starting at ``offset``.

    The default offset ``every // 2`` keeps view 0 for training, so on an orbit each held-out view lies between
    two training views. ``every`` < 2 is refused (nothing would be left to train on, or nothing to test).
    """
    if every < 2:
        raise ValueError(f"holdout_every must be at least 2, got {every}")
    start = every // 2 if offset is None else offset
    held = [i for i in range(num_views) if i >= start and (i - start) % every == 0]
    train = [i for i in range(num_views) if i not in held]
    if not held or not train:
        raise ValueError(f"{num_views} views with every={every} leave no training or no held-out view")
    return train, held


def _select(scene: SceneDataset, views: Sequence[int | str] | None) -> list[View]:
    if views is None:
        return list(scene.views)
    return [scene.views[scene.view_index(v) if isinstance(v, str) else int(v)] for v in views]


def bundle_from_scene(
    scene: SceneDataset | str | os.PathLike,
    views: Sequence[int | str] | None,
    out_dir: str | os.PathLike,
    stride: int = 2,
    overwrite: bool = False,
) -> Path:
    """Write the ground-truth bundle of ``views`` (indices or stems; None = all) of a scene; returns its path.

    Every view needs depth and instance maps. ``stride`` keeps every stride-th pixel in x and y as a point
    (a 160x120 view gives 4800 points at stride 2).
    """
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    scene = scene if isinstance(scene, SceneDataset) else read_scene(scene)
    chosen = _select(scene, views)
    if not chosen:
        raise ValueError("no views to build a bundle from")
    class_of = scene.class_of_instance()
    images, cameras, panoptic, photos = [], [], {}, {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("xyz", "rgb", "segment", "view", "pixel")}
    for index, v in enumerate(chosen):
        if v.depth is None or v.instance is None:
            raise ValueError(f"view {v.stem} has no depth or instance map; a ground-truth bundle needs both")
        unknown = set(np.unique(v.instance).tolist()) - set(class_of) - {0}
        if unknown:
            raise ValueError(f"view {v.stem} has instance ids {sorted(unknown)} that the scene does not list")
        xyz = gt_pointmaps(scene, scene.view_index(v.stem))  # [H, W, 3], NaN where no depth
        rows, cols = np.mgrid[0 : v.height : stride, 0 : v.width : stride]
        rows, cols = rows.ravel(), cols.ravel()
        keep = np.isfinite(xyz[rows, cols]).all(1)
        rows, cols = rows[keep], cols[keep]
        parts["xyz"].append(xyz[rows, cols].astype(np.float32))
        parts["rgb"].append(v.image[rows, cols])
        parts["segment"].append(v.instance[rows, cols].astype(np.int32))
        parts["view"].append(np.full(len(rows), index, np.int16))
        parts["pixel"].append(np.stack([cols, rows], 1).astype(np.uint16))
        images.append(
            {
                "index": index,
                "file": f"{v.stem}.png",
                "stem": v.stem,
                "original_size": [v.width, v.height],
                "processed_size": [v.width, v.height],
                "crop_box": [0, 0, v.width, v.height],
                "keyframe": index == 0,
            }
        )
        K = splat_K(v.K)
        cameras.append(
            {
                "image": index,
                "K": K.tolist(),
                "cam_to_world": np.asarray(v.cam_to_world).tolist(),
                "focal": float(K[0, 0]),
                "confidence": 1.0,
            }
        )
        panoptic[v.stem] = v.instance.astype(np.int32)
        photos[v.stem] = np.ascontiguousarray(v.image, np.uint8)
    points = {k: np.concatenate(p) for k, p in parts.items()}
    points["conf"] = np.ones(len(points["xyz"]), np.float32)
    manifest = {
        "model": {"id": "ground-truth", "version": "v2", "checkpoint_md5": None},
        "options": {
            "source": "synthetic scene ground truth",
            "stride": stride,
            "seed": scene.seed,
            "views": [v.stem for v in chosen],
        },
        "timings": {},
        "images": images,
        "cameras": cameras,
        "classes": [{"id": c.id, "name": c.name, "isthing": c.isthing} for c in scene.classes],
        "segments": [{"id": i.id, "class_id": i.class_id, "score": 1.0} for i in scene.instances],
    }
    return write_bundle(out_dir, manifest, points, panoptic, photos, overwrite=overwrite)


@dataclass
class ViewScores:
    """Mean over the views of PSNR (dB) and pixel accuracy of the instance and class labels (void = 0)."""

    psnr: float
    instance_acc: float
    class_acc: float
    render_s: float  # median seconds to render one view with labels


def evaluate_views(model, views: Sequence[View], backend: str = "auto") -> ViewScores:
    """Render ``model`` (a SplatModel) from every view's camera and score it against the view's photo and maps.

    Rendered void (segment 0, class -1) counts as label 0, the scenes' void; it is wrong wherever the truth
    has a label (a closed room has one everywhere).
    """

    psnrs, inst, cls, times = [], [], [], []
    for v in views:
        start = time.perf_counter()
        out = render(model, splat_K(v.K), v.cam_to_world, v.width, v.height, backend=backend)
        times.append(time.perf_counter() - start)
        psnrs.append(psnr(torch.from_numpy(out.rgb), torch.from_numpy(v.image.astype(np.float32) / 255.0)))
        inst.append(float((out.segment == v.instance.astype(np.int64)).mean()))
        cls.append(float((np.maximum(out.class_id, 0) == v.semantic.astype(np.int64)).mean()))
    return ViewScores(float(np.mean(psnrs)), float(np.mean(inst)), float(np.mean(cls)), float(np.median(times)))


def majority_baseline(views: Sequence[View]) -> tuple[float, float]:
    """(instance, class) accuracy of predicting the most common label of ``views`` everywhere in them."""
    inst = np.concatenate([v.instance.ravel() for v in views]).astype(np.int64)
    sem = np.concatenate([v.semantic.ravel() for v in views]).astype(np.int64)
    return float(np.bincount(inst).max() / inst.size), float(np.bincount(sem).max() / sem.size)
