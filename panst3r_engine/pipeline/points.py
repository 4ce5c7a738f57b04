"""The bundle's point cloud: every view's confident points with colour, confidence, segment and source pixel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from panst3r_engine.geometry import confident_points
from panst3r_engine.pipeline.cameras import ViewGeometry

DTYPES = {
    "xyz": np.float32,
    "rgb": np.uint8,
    "conf": np.float32,
    "segment": np.int32,
    "view": np.int16,
    "pixel": np.uint16,
}


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


def view_points(index: int, view: ViewGeometry, rgb: np.ndarray, ids: np.ndarray, threshold: float) -> PointCloud:
    """One view's confident points with colour, confidence, segment id and source pixel."""
    keep = confident_points(view.pts3d, view.conf, threshold)
    rows, cols = np.nonzero(keep)
    return PointCloud(
        xyz=view.pts3d[rows, cols].astype(np.float32),
        rgb=rgb[rows, cols].astype(np.uint8),
        conf=view.conf[rows, cols].astype(np.float32),
        segment=ids[rows, cols].astype(np.int32),
        view=np.full(len(rows), index, dtype=np.int16),
        pixel=np.stack([cols, rows], axis=1).astype(np.uint16),
    )


def join_points(parts: Iterable[PointCloud]) -> PointCloud:
    """The views' point clouds in one (in order)."""
    parts = list(parts)
    if not parts:
        empty = {"xyz": (0, 3), "rgb": (0, 3), "conf": (0,), "segment": (0,), "view": (0,), "pixel": (0, 2)}
        return PointCloud(**{k: np.zeros(shape, DTYPES[k]) for k, shape in empty.items()})
    arrays = [p.arrays() for p in parts]
    return PointCloud(**{k: np.concatenate([a[k] for a in arrays]) for k in DTYPES})


def collect_points(
    views: Iterable[ViewGeometry], photos_rgb: list[np.ndarray], pan: list[np.ndarray], threshold: float
) -> PointCloud:
    """Confident points of every view with colour, confidence, segment id and source pixel.

    ``views`` may be a generator: each view is used once, so they need not all be in memory.
    """
    return join_points(
        view_points(index, view, rgb, ids, threshold)
        for index, (view, rgb, ids) in enumerate(zip(views, photos_rgb, pan))
    )


def confidence_warnings(conf_maps: Sequence[np.ndarray], kept: int, threshold: float) -> list[str]:
    """A sentence when the threshold kept no point (or almost none), naming a threshold that keeps about half.

    ``conf_maps``: every view's [H, W] confidence; read once to count pixels, and gathered only to name
    a threshold when the warning is due.
    """
    total = sum(int(np.asarray(c).size) for c in conf_maps)
    if total == 0 or kept >= 0.01 * total:
        return []
    conf = np.concatenate([np.asarray(c, dtype=np.float32).ravel() for c in conf_maps])
    suggestion = max(1.0, float(np.floor(np.median(conf) * 100) / 100))
    what = "no point" if kept == 0 else f"only {kept} of {conf.size} pixels"
    return [
        f"{what} reached the confidence threshold {threshold:g} (the highest confidence is {conf.max():.3g}); "
        f"run again with --conf-threshold {suggestion:g} to keep about half of the pixels "
        "(very low confidences usually mean untrained or mismatched weights)"
    ]
