"""Initial Gaussians from the bundle's annotated point cloud (the 3DGS recipe, labels carried along).

One Gaussian per point, after an optional voxel merge that keeps the count within ``max_gaussians``: mean
position and colour per voxel, the segment by majority vote (its class follows from the manifest). Scales are
isotropic, the mean distance to the 3 nearest neighbours; opacity starts at 0.1 and rotation at identity, so
the first steps can still move and grow every Gaussian.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from scipy.spatial import cKDTree

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.read import Bundle, read_bundle
from panst3r_engine.splats.model import SplatModel, rgb_to_sh0

INIT_OPACITY = 0.1
SPACING_SAMPLE = 20_000  # points used to estimate the typical point spacing


def _voxel_keys(xyz: np.ndarray, voxel: float) -> np.ndarray:
    """int64 [M] voxel index of every point."""
    cell = np.floor((xyz - xyz.min(0)) / voxel).astype(np.int64)  # [M, 3]
    dims = cell.max(0) + 1
    return (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]


def point_spacing(xyz: np.ndarray, seed: int = 0) -> float:
    """Median distance from a point to its nearest neighbour (on a sample for large clouds)."""
    rng = np.random.default_rng(seed)
    sample = xyz if len(xyz) <= SPACING_SAMPLE else xyz[rng.choice(len(xyz), SPACING_SAMPLE, replace=False)]
    dist, _ = cKDTree(xyz).query(sample, k=2)
    positive = dist[:, 1][dist[:, 1] > 0]
    return float(np.median(positive)) if positive.size else 0.0


def choose_voxel(xyz: np.ndarray, max_gaussians: int) -> float | None:
    """None when the points fit, else the smallest voxel (geometric steps of 1.1x) leaving <= max_gaussians."""
    if len(xyz) <= max_gaussians:
        return None
    extent = float(np.ptp(xyz, axis=0).max()) or 1.0
    # A surface-like cloud thins as voxel^-2, so start from the spacing scaled by the needed reduction.
    voxel = max(point_spacing(xyz), extent * 1e-6) * math.sqrt(len(xyz) / max_gaussians)
    while len(np.unique(_voxel_keys(xyz, voxel))) > max_gaussians:
        voxel *= 1.1
    return voxel


def voxel_merge(
    xyz: np.ndarray, rgb: np.ndarray, segment: np.ndarray, voxel: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyz [V, 3] mean, rgb [V, 3] mean 0-255 float, segment [V] majority, smallest id on ties) per voxel."""
    _, inverse, counts = np.unique(_voxel_keys(xyz, voxel), return_inverse=True, return_counts=True)
    n = len(counts)
    mean_xyz = np.stack([np.bincount(inverse, xyz[:, i], n) for i in range(3)], 1) / counts[:, None]
    mean_rgb = np.stack([np.bincount(inverse, rgb[:, i].astype(np.float64), n) for i in range(3)], 1) / counts[:, None]
    seg_ids, seg_idx = np.unique(segment, return_inverse=True)
    pair, pair_count = np.unique(inverse.astype(np.int64) * len(seg_ids) + seg_idx, return_counts=True)
    vox, seg = pair // len(seg_ids), pair % len(seg_ids)
    order = np.lexsort((seg, -pair_count, vox))  # per voxel: most votes first, then the smallest id
    first = np.r_[True, vox[order][1:] != vox[order][:-1]]
    majority = np.empty(n, segment.dtype)
    majority[vox[order][first]] = seg_ids[seg[order][first]]
    return mean_xyz, mean_rgb, majority


def knn_scale(xyz: np.ndarray) -> np.ndarray:
    """[M] mean distance to the 3 nearest other points; zero distances (duplicates) get a small positive floor."""
    if len(xyz) < 2:
        return np.full(len(xyz), 0.01)
    k = min(4, len(xyz))
    dist, _ = cKDTree(xyz).query(xyz, k=k)
    scale = dist[:, 1:].mean(1)
    positive = scale[scale > 0]
    floor = 0.1 * float(np.median(positive)) if positive.size else 0.01
    return np.maximum(scale, floor)


def _lookup_classes(segment: np.ndarray, segment_class: dict[int, int]) -> np.ndarray:
    """int32 [M] class of every segment id; -1 for 0 and unknown ids."""
    if not segment_class:
        return np.full(len(segment), -1, np.int32)
    keys = np.array(sorted(segment_class), np.int64)  # [S]
    values = np.array([segment_class[k] for k in keys.tolist()], np.int32)
    pos = np.minimum(np.searchsorted(keys, segment), len(keys) - 1)  # [M]
    return np.where((segment != 0) & (keys[pos] == segment), values[pos], -1).astype(np.int32)


def init_from_points(
    xyz: np.ndarray,
    rgb: np.ndarray,
    segment: np.ndarray,
    segment_class: dict[int, int],
    max_gaussians: int = 200_000,
    voxel: float | None = None,
    sh_degree: int = 1,
) -> SplatModel:
    """Gaussians from points: xyz float [M, 3], rgb uint8 [M, 3], segment int [M] (0 = unlabelled).

    ``segment_class`` maps segment ids to class ids; unlisted segments and segment 0 get class -1.
    ``voxel`` None picks the size from the point spacing so that at most ``max_gaussians`` remain.
    """
    xyz = np.asarray(xyz, np.float64)
    rgb, segment = np.asarray(rgb), np.asarray(segment, np.int64)
    if len(xyz) == 0:
        raise ValueError("no points to initialise Gaussians from")
    if max_gaussians < 1:
        raise ValueError("max_gaussians must be at least 1")
    voxel = choose_voxel(xyz, max_gaussians) if voxel is None else float(voxel)
    if voxel is not None:
        if not voxel > 0:
            raise ValueError(f"voxel must be positive, got {voxel}")
        xyz, rgb, segment = voxel_merge(xyz, rgb, segment, voxel)
    if len(xyz) > max_gaussians:
        raise ValueError(f"voxel {voxel} leaves {len(xyz)} Gaussians, more than max_gaussians={max_gaussians}")
    n = len(xyz)
    classes = _lookup_classes(segment, segment_class)
    colour = torch.as_tensor(np.asarray(rgb, np.float64) / 255.0, dtype=torch.float32)
    return SplatModel(
        means=torch.as_tensor(xyz, dtype=torch.float32),
        scales=torch.as_tensor(np.log(knn_scale(xyz)), dtype=torch.float32)[:, None].repeat(1, 3),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        opacities=torch.full((n,), math.log(INIT_OPACITY / (1 - INIT_OPACITY))),
        sh0=rgb_to_sh0(colour)[:, None, :],
        shN=torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3),
        segment=torch.as_tensor(segment, dtype=torch.int32),
        class_id=torch.as_tensor(classes, dtype=torch.int32),
    )


def segment_classes(bundle: Bundle) -> dict[int, int]:
    """Segment id -> class id from the manifest."""
    return {int(s["id"]): int(s["class_id"]) for s in bundle.manifest["segments"]}


def init_from_bundle(
    bundle: Bundle | str | os.PathLike, max_gaussians: int = 200_000, voxel: float | None = None, sh_degree: int = 1
) -> SplatModel:
    """Gaussians from a bundle's ``points.npz`` and its segments' classes."""
    bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    pts = bundle.points
    if len(pts["xyz"]) == 0:
        raise BundleError(f"the bundle {bundle.path} has no points, so there is nothing to make splats from")
    return init_from_points(
        pts["xyz"], pts["rgb"], pts["segment"], segment_classes(bundle), max_gaussians, voxel, sh_degree
    )
