"""Umeyama, Chamfer, camera and focal errors with known transforms."""

from __future__ import annotations

import numpy as np
import pytest

from panst3r_engine.eval.geometry_metrics import (
    apply_similarity,
    camera_errors,
    chamfer,
    focal_error,
    rotation_angle_deg,
    umeyama,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def axis_rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rodrigues rotation about ``axis`` by ``deg`` degrees."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


# ----------------------------------------------------------------------------- umeyama


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    s, rot, t = 2.5, random_rotation(rng), np.array([1.0, -2.0, 0.5])
    dst = apply_similarity(src, s, rot, t)
    s_e, r_e, t_e = umeyama(src, dst)
    assert s_e == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(r_e, rot, atol=1e-12)
    np.testing.assert_allclose(t_e, t, atol=1e-12)


def test_umeyama_rigid_mode_keeps_unit_scale():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    rot, t = random_rotation(rng), rng.normal(size=3)
    s_e, r_e, t_e = umeyama(src, apply_similarity(src, 1.0, rot, t), with_scale=False)
    assert s_e == 1.0
    np.testing.assert_allclose(r_e, rot, atol=1e-12)
    np.testing.assert_allclose(t_e, t, atol=1e-12)
    # a scaled target without scale estimation cannot be matched exactly
    s2, _, _ = umeyama(src, apply_similarity(src, 3.0, rot, t), with_scale=False)
    assert s2 == 1.0


def test_umeyama_reflection_gives_proper_rotation_and_degenerate_raises():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    _, rot, _ = umeyama(src, src * np.array([1.0, 1.0, -1.0]))
    assert np.linalg.det(rot) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.ones((5, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(ValueError):
        umeyama(src, src[:10])


# ----------------------------------------------------------------------------- chamfer


def grid(n: int = 5, spacing: float = 1.0) -> np.ndarray:
    a = np.arange(n) * spacing
    return np.stack(np.meshgrid(a, a, a, indexing="ij"), -1).reshape(-1, 3)


def test_chamfer_known_offsets():
    g = grid()
    assert chamfer(g, g)["chamfer"] == 0.0
    # shift by 0.1 along z (< half the spacing): every nearest neighbour is the shifted twin
    r = chamfer(g + np.array([0, 0, 0.1]), g)
    assert r["accuracy"] == pytest.approx(0.1) and r["completeness"] == pytest.approx(0.1)
    assert r["chamfer"] == pytest.approx(0.1)
    # one extra predicted point 5 away from the grid: accuracy = 5 / (125 + 1), completeness 0
    extra = np.vstack([g, [[4.0, 4.0, 9.0]]])
    r = chamfer(extra, g)
    assert r["accuracy"] == pytest.approx(5.0 / 126) and r["completeness"] == 0.0
    assert r["chamfer"] == pytest.approx(2.5 / 126) and r["accuracy_median"] == 0.0


def test_chamfer_alignment_and_explicit_transform():
    rng = np.random.default_rng(3)
    g = rng.uniform(-1, 1, size=(200, 3))
    s, rot, t = 0.4, random_rotation(rng), np.array([3.0, 0.0, -1.0])
    pred = apply_similarity(g - t, 1.0 / s, rot.T, np.zeros(3))  # inverse similarity: g = s R pred + t
    assert chamfer(pred, g)["chamfer"] > 0.1
    r = chamfer(pred, g, align=True)
    assert r["chamfer"] < 1e-9 and r["scale"] == pytest.approx(s)
    assert chamfer(pred, g, transform=(s, rot, t))["chamfer"] < 1e-9
    with pytest.raises(ValueError):
        chamfer(pred[:10], g, align=True)


# ----------------------------------------------------------------------------- cameras, focal


def gt_cameras(rng: np.random.Generator, n: int = 6) -> np.ndarray:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = random_rotation(rng)
        c2w[i, :3, 3] = rng.normal(size=3) * 2
    return c2w


def to_other_frame(c2w: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cameras expressed in a frame where x_gt = s R x + t (rotation Rᵀ R_gt, centre Rᵀ(c - t)/s)."""
    out = c2w.copy()
    out[:, :3, :3] = rot.T @ c2w[:, :3, :3]
    out[:, :3, 3] = (c2w[:, :3, 3] - t) @ rot / s
    return out


def test_camera_errors_zero_after_similarity():
    rng = np.random.default_rng(4)
    gt = gt_cameras(rng)
    pred = to_other_frame(gt, 0.3, random_rotation(rng), rng.normal(size=3))
    r = camera_errors(pred, gt)
    assert r["rot_err_deg"].shape == (6,)
    assert r["rot_err_deg_mean"] < 1e-5 and r["trans_err_mean"] < 1e-9
    assert r["alignment"][0] == pytest.approx(0.3)  # maps pred onto GT: x_gt = 0.3 R x + t
    assert camera_errors(pred, gt, align=False)["trans_err_mean"] > 0.1


def test_camera_errors_known_perturbations():
    rng = np.random.default_rng(5)
    gt = gt_cameras(rng)
    pred = gt.copy()
    pred[2, :3, :3] = pred[2, :3, :3] @ axis_rotation([0, 1, 0], 5.0)  # 5 deg about the camera y axis
    r = camera_errors(pred, gt)  # centres untouched -> identity alignment
    np.testing.assert_allclose(r["rot_err_deg"], [0, 0, 5.0, 0, 0, 0], atol=1e-5)
    pred = gt.copy()
    pred[0, :3, 3] += np.array([0.0, 0.3, 0.4])
    r = camera_errors(pred, gt, align=False)
    np.testing.assert_allclose(r["trans_err"], [0.5, 0, 0, 0, 0, 0], atol=1e-12)
    assert r["trans_err_mean"] == pytest.approx(0.5 / 6)
    assert camera_errors(pred, gt)["trans_err_mean"] > 0.0  # alignment spreads, cannot hide it
    with pytest.raises(ValueError, match="3 cameras"):
        camera_errors(pred[:2], gt[:2])


def test_rotation_angle():
    assert rotation_angle_deg(np.eye(3), axis_rotation([1, 2, 3], 33.0)) == pytest.approx(33.0)


def test_focal_error():
    r = focal_error([110.0, 90.0, 100.0], [100.0, 100.0, 100.0])
    np.testing.assert_allclose(r["relative"], [0.1, 0.1, 0.0])
    assert r["mean"] == pytest.approx(0.2 / 3) and r["median"] == pytest.approx(0.1)
    assert focal_error(50.0, 40.0)["mean"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        focal_error(1.0, 0.0)
