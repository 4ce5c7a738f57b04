"""Geometry and camera errors against ground truth, up to a similarity transform.

The engine's world is the reference camera's frame in network units, so a
prediction is compared to GT after a similarity (scale, rotation, translation)
alignment: Umeyama on corresponding points (pixel-aligned pointmaps) or on
camera centres. All functions take numpy arrays and return float64 values.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _points(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be [N, 3], got {a.shape}")
    return a


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991).

    src, dst: corresponding points ``[N, 3]``. Returns ``(s, R [3, 3], t [3])``
    with det R = +1 (s = 1 without scale). Raises ValueError for N < 2 or when
    ``src`` points coincide. With collinear points the rotation about their
    line is arbitrary (any valid minimiser is returned).
    """
    x, y = _points(src, "src"), _points(dst, "dst")
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"need >= 2 corresponding points, got src {x.shape}, dst {y.shape}")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = (xc**2).sum(1).mean()
    if var_x <= 1e-24:
        raise ValueError("umeyama: source points coincide, similarity undefined")
    u, d, vt = np.linalg.svd(yc.T @ xc / x.shape[0])
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
    rot = u @ np.diag(sign) @ vt
    s = float((d * sign).sum() / var_x) if with_scale else 1.0
    return s, rot, my - s * rot @ mx


def apply_similarity(points: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``s R p + t`` for points ``[N, 3]``."""
    return s * np.asarray(points, np.float64) @ np.asarray(rot).T + np.asarray(t)


def chamfer(
    pred: np.ndarray,
    gt: np.ndarray,
    align: bool = False,
    transform: tuple[float, np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Accuracy (pred -> nearest GT), completeness (GT -> nearest pred) and their mean.

    pred ``[N, 3]``, gt ``[M, 3]``. ``transform=(s, R, t)`` is applied to pred
    first; or ``align=True`` fits it with Umeyama, treating rows as
    correspondences (needs N == M, e.g. pixel-aligned pointmaps). Returns
    accuracy, completeness, chamfer = (accuracy + completeness) / 2 (means, in
    GT units), their medians, and the scale used.
    """
    p, g = _points(pred, "pred"), _points(gt, "gt")
    if align and transform is not None:
        raise ValueError("give either align=True or transform, not both")
    if align:
        if p.shape != g.shape:
            raise ValueError("align=True needs corresponding rows (pred and gt of equal length)")
        transform = umeyama(p, g)
    if transform is not None:
        p = apply_similarity(p, *transform)
    acc = cKDTree(g).query(p)[0]
    comp = cKDTree(p).query(g)[0]
    return {
        "accuracy": float(acc.mean()),
        "completeness": float(comp.mean()),
        "chamfer": float((acc.mean() + comp.mean()) / 2),
        "accuracy_median": float(np.median(acc)),
        "completeness_median": float(np.median(comp)),
        "scale": float(transform[0]) if transform is not None else 1.0,
    }


def rotation_angle_deg(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations ``[..., 3, 3]``, degrees ``[...]``."""
    rel = np.einsum("...ji,...jk->...ik", r1, r2)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def camera_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray, align: bool = True) -> dict:
    """Per-view rotation (degrees) and translation errors of camera-to-world poses ``[V, 4, 4]``.

    With ``align`` the prediction is first mapped into the GT frame by the
    Umeyama similarity of the camera centres (needs V >= 3 and centres not all
    collinear for a well-defined rotation); its rotation also turns the
    predicted orientations. Translation errors are centre distances in GT
    units. Returns rot_err_deg, trans_err ``[V]``, their means and medians,
    and the alignment ``(s, R, t)``.
    """
    p, g = np.asarray(pred_c2w, np.float64), np.asarray(gt_c2w, np.float64)
    if p.shape != g.shape or p.shape[-2:] != (4, 4) or p.ndim != 3:
        raise ValueError(f"expected two [V, 4, 4] arrays, got {p.shape} and {g.shape}")
    s, rot, t = 1.0, np.eye(3), np.zeros(3)
    if align:
        if p.shape[0] < 3:
            raise ValueError("align=True needs at least 3 cameras")
        s, rot, t = umeyama(p[:, :3, 3], g[:, :3, 3])
    centres = apply_similarity(p[:, :3, 3], s, rot, t)
    rot_err = rotation_angle_deg(rot @ p[:, :3, :3], g[:, :3, :3])
    trans_err = np.linalg.norm(centres - g[:, :3, 3], axis=1)
    return {
        "rot_err_deg": rot_err,
        "trans_err": trans_err,
        "rot_err_deg_mean": float(rot_err.mean()),
        "rot_err_deg_median": float(np.median(rot_err)),
        "trans_err_mean": float(trans_err.mean()),
        "trans_err_median": float(np.median(trans_err)),
        "alignment": (s, rot, t),
    }


def focal_error(pred: np.ndarray | float, gt: np.ndarray | float) -> dict:
    """Relative focal error ``|f_pred - f_gt| / f_gt`` per view ``[V]``, with mean and median.

    Focals in the same pixel units (scale K first if the images differ in size).
    """
    p, g = np.atleast_1d(np.asarray(pred, np.float64)), np.atleast_1d(np.asarray(gt, np.float64))
    if np.any(g <= 0):
        raise ValueError("GT focal must be positive")
    rel = np.abs(p - g) / g
    return {"relative": rel, "mean": float(rel.mean()), "median": float(np.median(rel))}
