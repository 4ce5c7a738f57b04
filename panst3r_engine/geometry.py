"""Cameras and confident points from MUSt3R pointmaps.

MUSt3R predicts, per view, a *local* pointmap (the view's own camera frame,
OpenCV axes: x right, y down, z forward; its z is the depth map) and a *global*
pointmap (the reference camera's frame, which is the engine's world frame).
From these two we recover, as the official post-processing does:

- the focal length, from the local pointmap alone (Weiszfeld IRLS, square
  pixels, principal point at the image centre);
- the camera-to-world pose, by weighted rigid Procrustes from local to global
  points with weights ``conf - 1`` (no scale);
- the points worth keeping: ``conf >= threshold`` (demo default 3.0).

Inputs may be numpy arrays (float32/float64) or torch tensors; every estimate
is computed and returned as numpy float64. The two activations keep the input
type (torch in, torch out) since they run on network outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # np.ndarray | torch.Tensor

#: Official post-processing constants.
WEISZFELD_ITERS = 10
MIN_CONF_THR = 3.0  # gradio / viser default for exported points
CAMERA_CONF_THR = 1.5  # gradio: a camera is drawn if median(conf) >= this


def _np64(x: ArrayLike) -> np.ndarray:
    """numpy float64 copy of a numpy array or torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- activations


def pointmap_activation(raw: ArrayLike) -> ArrayLike:
    """Norm-exp activation of raw head xyz, ``[..., 3] -> [..., 3]``.

    ``x / max(|x|, 1e-8) * expm1(|x|)``: inverse of the log-space training loss.
    """
    if isinstance(raw, torch.Tensor):
        d = raw.norm(dim=-1, keepdim=True)
        return raw / d.clamp(min=1e-8) * torch.expm1(d)
    raw = np.asarray(raw)
    d = np.linalg.norm(raw, axis=-1, keepdims=True)
    return raw / np.maximum(d, 1e-8) * np.expm1(d)


def conf_activation(raw: ArrayLike) -> ArrayLike:
    """Confidence activation ``1 + exp(c)``, so confidence is >= 1."""
    if isinstance(raw, torch.Tensor):
        return 1.0 + torch.exp(raw)
    return 1.0 + np.exp(np.asarray(raw))


# --------------------------------------------------------------------------- focal


def pixel_grid(height: int, width: int, pp: tuple[float, float] | None = None) -> np.ndarray:
    """Centred pixel coordinates ``[H, W, 2]`` as (u, v) = (col - cx, row - cy).

    Integer pixel indices, no half-pixel shift; ``pp`` defaults to (W/2, H/2).
    """
    cx, cy = (width / 2.0, height / 2.0) if pp is None else (float(pp[0]), float(pp[1]))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([cols - cx, rows - cy], axis=-1).astype(np.float64)


def _rays(pts: np.ndarray) -> np.ndarray:
    """(x/z, y/z) with NaN and +-inf replaced by 0, as ``nan_to_num`` does. ``[..., 3] -> [..., 2]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rays = pts[..., :2] / pts[..., 2:3]
    return np.nan_to_num(rays, nan=0.0, posinf=0.0, neginf=0.0)


def _weiszfeld(rays: np.ndarray, pix: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Batched 1-D Weiszfeld: ``f = argmin sum weight * |pix - f * rays|``.

    rays, pix: ``[B, N, 2]``; weight: ``[B, N]`` (1 = use, 0 = ignore). Returns ``[B]``.
    Masked-out pixels are excluded from both sums; with an all-ones weight
    this is exactly the official mean-based update.
    """
    dot_ap = (rays * pix).sum(-1)
    dot_aa = (rays * rays).sum(-1)
    den = (weight * dot_aa).sum(-1)
    if np.any(den <= 0):
        bad = np.flatnonzero(den <= 0).tolist()
        raise ValueError(f"focal undefined: no usable ray (x/z, y/z) in view(s) {bad}")
    focal = (weight * dot_ap).sum(-1) / den
    for _ in range(WEISZFELD_ITERS):
        dist = np.linalg.norm(pix - focal[:, None, None] * rays, axis=-1)
        w = weight / np.maximum(dist, 1e-8)
        focal = (w * dot_ap).sum(-1) / (w * dot_aa).sum(-1)
    return np.clip(focal, 0.0, None)


def _check_ray_spread(rays: np.ndarray, weight: np.ndarray) -> None:
    """Raise ValueError for views without two distinct non-zero rays (focal undefined)."""
    for b in range(rays.shape[0]):
        used = rays[b][(weight[b] > 0) & np.any(rays[b] != 0, axis=-1)]
        if used.shape[0] < 2 or np.ptp(used, axis=0).max() <= 1e-12:
            raise ValueError(
                f"focal undefined for view {b}: fewer than two distinct usable rays "
                "(points identical, all on one ray, or non-finite)"
            )


def _focals(pts_local: np.ndarray, pp: tuple[float, float] | None, mask: np.ndarray | None) -> np.ndarray:
    """Focal per view for ``pts_local [B, H, W, 3]``, optional ``mask [B, H, W]``. Returns ``[B]``."""
    b, h, w, _ = pts_local.shape
    rays = _rays(pts_local).reshape(b, h * w, 2)
    pix = np.broadcast_to(pixel_grid(h, w, pp).reshape(1, h * w, 2), rays.shape)
    weight = np.ones((b, h * w)) if mask is None else np.asarray(mask, bool).reshape(b, h * w).astype(float)
    _check_ray_spread(rays, weight)
    return _weiszfeld(rays, pix, weight)


def estimate_focal(pts_local: ArrayLike, pp: tuple[float, float] | None = None, mask: ArrayLike | None = None) -> float:
    """Focal length in pixels from one local pointmap ``[H, W, 3]``.

    Official ``weiszfeld`` mode: rays (x/z, y/z) against centred pixels, init
    ``mean(a.p)/mean(|a|^2)``, 10 reweighting steps, clipped at 0. ``pp``
    defaults to (W/2, H/2). ``mask [H, W]`` (e.g. confident pixels) restricts
    the fit; the default uses every pixel, as the official code does.
    Raises ValueError when no pixel gives a usable ray or all rays coincide.
    """
    pts = _np64(pts_local)
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise ValueError(f"pts_local must be [H, W, 3], got {pts.shape}")
    m = None if mask is None else _np64(mask)[None] > 0
    return float(_focals(pts[None], pp, m)[0])


# --------------------------------------------------------------------------- pose


def _procrustes(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Batched weighted rigid registration, ``y ~ R x + t``.

    x, y: ``[B, N, 3]``; w: ``[B, N]`` non-negative, each row summing to 1.
    Returns ``[B, 4, 4]`` (a proper rotation, det = +1).
    """
    xm = np.einsum("bn,bnk->bk", w, x)
    ym = np.einsum("bn,bnk->bk", w, y)
    m = np.einsum("bn,bni,bnj->bij", w, y - ym[:, None], x - xm[:, None])
    u, s, vt = np.linalg.svd(m)
    degenerate = (s[:, 0] <= 0) | (s[:, 1] <= 1e-12 * s[:, 0])
    if np.any(degenerate):
        bad = np.flatnonzero(degenerate).tolist()
        raise ValueError(f"pose undefined for view(s) {bad}: weighted points are identical or collinear")
    d = np.ones((x.shape[0], 3))
    d[:, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ (d[:, :, None] * vt)
    out = np.tile(np.eye(4), (x.shape[0], 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = ym - np.einsum("bij,bj->bi", rot, xm)
    return out


def _pose_weights(x: np.ndarray, y: np.ndarray, conf: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``conf - 1`` normalised per view, 0 on non-finite points or masked-out pixels. ``[B, N]``.

    A view whose weights sum to 0 (all conf == 1, e.g. exp underflow) falls
    back to uniform weights over its finite points.
    """
    finite = np.isfinite(x).all(-1) & np.isfinite(y).all(-1) & np.isfinite(conf)
    if mask is not None:
        finite &= mask
    w = np.where(finite, np.clip(conf - 1.0, 0.0, None), 0.0)
    total = w.sum(-1, keepdims=True)
    w = np.where(total > 0, w, finite.astype(float))
    total = w.sum(-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("pose undefined: a view has no finite point pair")
    return w / total


def _poses(local: np.ndarray, glob: np.ndarray, conf: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """c2w ``[B, 4, 4]`` from ``[B, H, W, 3]`` pointmaps and ``[B, H, W]`` confidences."""
    b = local.shape[0]
    x = local.reshape(b, -1, 3)
    y = glob.reshape(b, -1, 3)
    c = conf.reshape(b, -1)
    m = None if mask is None else mask.reshape(b, -1)
    w = _pose_weights(x, y, c, m)
    x = np.where(w[..., None] > 0, x, 0.0)
    y = np.where(w[..., None] > 0, y, 0.0)
    return _procrustes(x, y, w)


def estimate_pose(
    pts_local: ArrayLike, pts_global: ArrayLike, conf: ArrayLike, mask: ArrayLike | None = None
) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` mapping ``pts_local [H, W, 3]`` onto ``pts_global [H, W, 3]``.

    Minimises ``sum w |R x + t - y|^2`` with ``w = conf - 1`` normalised
    (``conf [H, W]``), proper rotation, no scale (official "Pro" pose).
    Non-finite points get weight 0. Raises ValueError when the weighted points
    are identical or collinear (rotation undefined).
    """
    x, y, c = _np64(pts_local), _np64(pts_global), _np64(conf)
    if x.shape != y.shape or x.shape[:-1] != c.shape or x.shape[-1] != 3:
        raise ValueError(f"shape mismatch: local {x.shape}, global {y.shape}, conf {c.shape}")
    m = None if mask is None else (_np64(mask) > 0)[None]
    return _poses(x[None], y[None], c[None], m)[0]


# --------------------------------------------------------------------------- cameras, points


def intrinsics(focal: ArrayLike, height: int, width: int) -> np.ndarray:
    """K ``[..., 3, 3]`` with fx = fy = focal, cx = W/2, cy = H/2 (processed-image pixels)."""
    f = np.asarray(_np64(focal))
    k = np.zeros(f.shape + (3, 3))
    k[..., 0, 0] = f
    k[..., 1, 1] = f
    k[..., 0, 2] = width / 2.0
    k[..., 1, 2] = height / 2.0
    k[..., 2, 2] = 1.0
    return k


def recover_cameras(
    pts_local: ArrayLike, pts_global: ArrayLike, conf: ArrayLike, mask: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``K [V, 3, 3]`` and camera-to-world ``[V, 4, 4]`` for every view.

    pts_local, pts_global: ``[V, H, W, 3]``; conf: ``[V, H, W]``; optional
    ``mask [V, H, W]`` restricts both fits (default: all pixels, as official).
    Raises ValueError naming the view when a view is degenerate.
    """
    x, y, c = _np64(pts_local), _np64(pts_global), _np64(conf)
    if x.ndim != 4 or x.shape != y.shape or x.shape[:-1] != c.shape or x.shape[-1] != 3:
        raise ValueError(f"expected [V,H,W,3] x2 and [V,H,W]; got {x.shape}, {y.shape}, {c.shape}")
    m = None if mask is None else _np64(mask) > 0
    focal = _focals(x, None, m)
    return intrinsics(focal, x.shape[1], x.shape[2]), _poses(x, y, c, m)


def confident_points(pts_global: ArrayLike, conf: ArrayLike, threshold: float = MIN_CONF_THR) -> np.ndarray:
    """Boolean mask ``[...]`` of points kept for export: ``conf >= threshold`` and finite xyz.

    pts_global ``[..., 3]``, conf ``[...]`` (e.g. ``[V, H, W]``).
    """
    p, c = _np64(pts_global), _np64(conf)
    if p.shape[:-1] != c.shape:
        raise ValueError(f"shape mismatch: points {p.shape}, conf {c.shape}")
    return (c >= threshold) & np.isfinite(p).all(-1)


def confident_cameras(conf: ArrayLike, threshold: float = CAMERA_CONF_THR) -> np.ndarray:
    """Boolean ``[V]``: views whose median confidence reaches ``threshold`` (demo camera rule)."""
    c = _np64(conf)
    return np.median(c.reshape(c.shape[0], -1), axis=1) >= threshold


def fov_y(focal: float, height: int) -> float:
    """Vertical field of view in radians, ``2 atan2(H/2, f)``."""
    return 2.0 * math.atan2(height / 2.0, focal)
