"""Cameras from activated pointmaps: the focal (Weiszfeld) + weighted Procrustes recipe.

The recipe of DUSt3R (arXiv 2312.14132, §3.3 "Recovering intrinsics" / "Relative pose estimation") as MUSt3R
(arXiv 2503.01661) and PanSt3R (arXiv 2506.21348) use it: the focal from the view's own-frame pointmap, the
pose from a confidence-weighted rigid alignment of its own-frame points onto its world-frame points.
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


@dataclass(frozen=True)
class Camera:
    """One photo's camera, as recovered from its pointmaps."""

    K: np.ndarray  # [3, 3] processed-image pixels (bundle/spec.py states the convention)
    cam_to_world: np.ndarray  # [4, 4] OpenCV axes, world = the reference keyframe's camera
    focal: float  # pixels
    confidence: float  # median point confidence of the view
    valid: bool  # False: recovery failed, K and pose are placeholders


def recover_camera(view: ViewGeometry) -> Camera:
    """The view's camera; a degenerate view (e.g. all points identical) gets an identity pose and a
    60-degree focal with ``valid=False`` instead of stopping the whole job."""
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
    return Camera(
        intrinsics(focal, height, width),
        np.asarray(pose, np.float64),
        float(focal),
        float(np.median(view.conf)),
        bool(ok),
    )
