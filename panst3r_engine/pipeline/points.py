"""The bundle's point cloud: every view's confident points with colour, confidence, segment and source pixel."""

from __future__ import annotations

from collections.abc import Sequence
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
SHAPES = {"xyz": (3,), "rgb": (3,), "conf": (), "segment": (), "view": (), "pixel": (2,)}  # per point


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


def collect_points(
    views: Sequence[ViewGeometry], photos_rgb: list[np.ndarray], pan: list[np.ndarray], threshold: float
) -> PointCloud:
    """Confident points of every view with colour, confidence, segment id and source pixel.

    ``views`` may compute each view when read (e.g. from pointmaps on disk): it is read twice, once to count
    the points and once to fill arrays allocated at their final size, so no more than one view's geometry
    and the point cloud itself are ever held (joining per-view parts would hold the points twice).
    """
    counts = [int(confident_points(view.pts3d, view.conf, threshold).sum()) for view in views]
    cloud = PointCloud(**{k: np.zeros((sum(counts), *shape), DTYPES[k]) for k, shape in SHAPES.items()})
    start = 0
    for index, (rgb, ids) in enumerate(zip(photos_rgb, pan)):
        part = view_points(index, views[index], rgb, ids, threshold)
        if len(part.conf) != counts[index]:
            raise RuntimeError(f"view {index} changed between reads ({counts[index]}, then {len(part.conf)} points)")
        for key, array in part.arrays().items():
            getattr(cloud, key)[start : start + counts[index]] = array
        start += counts[index]
    return cloud


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
