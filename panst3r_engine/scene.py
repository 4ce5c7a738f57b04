"""Turning oriented network outputs into bundle content: cameras, points, segments.

Everything here is numpy and runs after the network: it takes per-view
pointmaps and panoptic maps in each photo's own orientation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from panst3r_engine.geometry import confident_points, estimate_focal, estimate_pose, intrinsics

log = logging.getLogger(__name__)


@dataclass
class ViewGeometry:
    """Activated pointmaps of one view (photo orientation)."""

    pts3d: np.ndarray  # [H, W, 3] world (reference camera) frame
    pts3d_local: np.ndarray  # [H, W, 3] own camera frame
    conf: np.ndarray  # [H, W]


def recover_camera(view: ViewGeometry) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """K [3, 3], cam_to_world [4, 4], focal, ok — the official focal + Procrustes recipe.

    A degenerate view (e.g. all points identical) gets an identity pose and a
    60-degree focal with ok=False instead of stopping the whole job.
    """
    height, width = view.conf.shape
    try:
        focal = float(estimate_focal(view.pts3d_local))
        pose = estimate_pose(view.pts3d_local, view.pts3d, view.conf)
        ok = np.isfinite(focal) and focal > 0 and np.isfinite(pose).all()
    except ValueError as exc:
        log.warning("camera recovery failed for a view: %s", exc)
        ok = False
    if not ok:
        focal, pose = max(height, width) / (2 * np.tan(np.radians(30))), np.eye(4)
    return intrinsics(focal, height, width), pose, focal, bool(ok)


@dataclass
class PointCloud:
    xyz: np.ndarray  # [N, 3] float32
    rgb: np.ndarray  # [N, 3] uint8
    conf: np.ndarray  # [N] float32
    segment: np.ndarray  # [N] int32
    view: np.ndarray  # [N] int16
    pixel: np.ndarray  # [N, 2] uint16 (x, y)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"xyz": self.xyz, "rgb": self.rgb, "conf": self.conf, "segment": self.segment, "view": self.view,
                "pixel": self.pixel}


def collect_points(views: list[ViewGeometry], photos_rgb: list[np.ndarray], pan: list[np.ndarray],
                   threshold: float) -> PointCloud:
    """Confident points of every view with colour, confidence, segment id and source pixel."""
    parts: dict[str, list] = {k: [] for k in ("xyz", "rgb", "conf", "segment", "view", "pixel")}
    for index, (view, rgb, ids) in enumerate(zip(views, photos_rgb, pan)):
        keep = confident_points(view.pts3d, view.conf, threshold)
        rows, cols = np.nonzero(keep)
        parts["xyz"].append(view.pts3d[rows, cols].astype(np.float32))
        parts["rgb"].append(rgb[rows, cols].astype(np.uint8))
        parts["conf"].append(view.conf[rows, cols].astype(np.float32))
        parts["segment"].append(ids[rows, cols].astype(np.int32))
        parts["view"].append(np.full(len(rows), index, dtype=np.int16))
        parts["pixel"].append(np.stack([cols, rows], axis=1).astype(np.uint16))
    empty = {"xyz": (0, 3), "rgb": (0, 3), "conf": (0,), "segment": (0,), "view": (0,), "pixel": (0, 2)}
    dtypes = {"xyz": np.float32, "rgb": np.uint8, "conf": np.float32, "segment": np.int32, "view": np.int16,
              "pixel": np.uint16}
    return PointCloud(**{k: np.concatenate(v) if v else np.zeros(empty[k], dtypes[k]) for k, v in parts.items()})
