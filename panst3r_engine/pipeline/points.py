"""The bundle's point cloud: every view's confident points with colour, confidence, segment and source pixel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panst3r_engine.geometry import confident_points
from panst3r_engine.pipeline.cameras import ViewGeometry


@dataclass
class PointCloud:
    xyz: np.ndarray  # [N, 3] float32
    rgb: np.ndarray  # [N, 3] uint8
    conf: np.ndarray  # [N] float32
    segment: np.ndarray  # [N] int32
    view: np.ndarray  # [N] int16
    pixel: np.ndarray  # [N, 2] uint16 (x, y)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "xyz": self.xyz,
            "rgb": self.rgb,
            "conf": self.conf,
            "segment": self.segment,
            "view": self.view,
            "pixel": self.pixel,
        }


def collect_points(
    views: list[ViewGeometry], photos_rgb: list[np.ndarray], pan: list[np.ndarray], threshold: float
) -> PointCloud:
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
    dtypes = {
        "xyz": np.float32,
        "rgb": np.uint8,
        "conf": np.float32,
        "segment": np.int32,
        "view": np.int16,
        "pixel": np.uint16,
    }
    return PointCloud(**{k: np.concatenate(v) if v else np.zeros(empty[k], dtypes[k]) for k, v in parts.items()})


def confidence_warnings(views: list[ViewGeometry], kept: int, threshold: float) -> list[str]:
    """A sentence when the threshold kept no point (or almost none), naming a threshold that keeps about half."""
    conf = np.concatenate([v.conf.ravel() for v in views]) if views else np.zeros(0)
    if conf.size == 0 or kept >= 0.01 * conf.size:
        return []
    suggestion = max(1.0, float(np.floor(np.median(conf) * 100) / 100))
    what = "no point" if kept == 0 else f"only {kept} of {conf.size} pixels"
    return [
        f"{what} reached the confidence threshold {threshold:g} (the highest confidence is {conf.max():.3g}); "
        f"run again with --conf-threshold {suggestion:g} to keep about half of the pixels "
        "(very low confidences usually mean untrained or mismatched weights)"
    ]
