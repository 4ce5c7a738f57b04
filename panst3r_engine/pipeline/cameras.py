"""Cameras from activated pointmaps: the focal (Weiszfeld) + weighted Procrustes recipe of DUSt3R/MUSt3R.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from panst3r_engine.geometry import estimate_focal, estimate_pose, intrinsics

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

