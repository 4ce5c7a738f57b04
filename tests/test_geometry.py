"""Focal, pose and confidence filtering on synthetic pointmaps from known cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine import geometry as geo

H, W = 24, 32


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random proper rotation [3, 3] (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def make_view(rng: np.random.Generator, focal: float, h: int = H, w: int = W):
    """Local/global pointmaps [h, w, 3] of one camera; pixel (row, col) -> depth * K^-1 [col, row, 1]."""
    depth = rng.uniform(1.0, 5.0, size=(h, w))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    local = np.stack([(cols - w / 2) / focal, (rows - h / 2) / focal, np.ones((h, w))], -1) * depth[..., None]
    rot, t = random_rotation(rng), rng.normal(size=3) * 2.0
    glob = local @ rot.T + t
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot, t
    return local, glob, c2w


def rot_angle_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    cos = (np.trace(r1.T @ r2) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


# ----------------------------------------------------------------------------- activations


def test_pointmap_activation_numpy_and_torch_agree_and_invert_log_loss():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 4, 3))
    out = geo.pointmap_activation(raw)
    # direction kept, norm becomes expm1(|raw|)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.expm1(np.linalg.norm(raw, axis=-1)), rtol=1e-12)
    np.testing.assert_allclose(
        out / np.linalg.norm(out, axis=-1, keepdims=True), raw / np.linalg.norm(raw, axis=-1, keepdims=True), rtol=1e-10
    )
    out_t = geo.pointmap_activation(torch.from_numpy(raw))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-12)
    # zero vector stays zero (no NaN from 0/0)
    assert np.all(geo.pointmap_activation(np.zeros((2, 3))) == 0)


def test_conf_activation():
    c = np.array([-50.0, 0.0, 1.0])
    np.testing.assert_allclose(geo.conf_activation(c), 1 + np.exp(c))
    assert torch.allclose(geo.conf_activation(torch.tensor(c)), torch.tensor(1 + np.exp(c)))
    assert np.all(geo.conf_activation(c) >= 1.0)


# ----------------------------------------------------------------------------- focal


def test_pixel_grid_convention():
    g = geo.pixel_grid(4, 6)
    # integer indices minus (W/2, H/2), no half-pixel shift
    assert g[0, 0].tolist() == [-3.0, -2.0]
    assert g[3, 5].tolist() == [2.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focal_exact_on_clean_pointmap(seed):
    rng = np.random.default_rng(seed)
    focal = rng.uniform(15.0, 80.0)
    local, _, _ = make_view(rng, focal)
    est = geo.estimate_focal(local)
    assert abs(est - focal) / focal < 5e-3
    assert isinstance(est, float)


def test_focal_float32_and_torch_inputs():
    rng = np.random.default_rng(3)
    local, _, _ = make_view(rng, 40.0)
    assert abs(geo.estimate_focal(local.astype(np.float32)) - 40.0) < 0.2
    assert abs(geo.estimate_focal(torch.from_numpy(local).float()) - 40.0) < 0.2


def test_focal_robust_to_outliers_and_bad_pixels():
    rng = np.random.default_rng(4)
    local, _, _ = make_view(rng, 50.0)
    noisy = local * (1 + rng.normal(scale=0.003, size=local.shape))
    # gross outliers with plausible depth (rays of z ~ 0 would dominate any L1 fit, official included)
    noisy[::5, ::7] = rng.uniform([-3, -3, 1], [3, 3, 5], size=noisy[::5, ::7].shape)
    noisy[0, :4] = np.nan
    noisy[1, :4, 2] = 0.0  # zero depth -> inf rays -> 0
    noisy[2, :2] = np.inf
    est = geo.estimate_focal(noisy)
    assert np.isfinite(est) and abs(est - 50.0) / 50.0 < 0.02


def test_focal_mask_ignores_corrupted_region():
    rng = np.random.default_rng(5)
    local, _, _ = make_view(rng, 30.0)
    bad = local.copy()
    bad[: H // 2] *= np.array([2.0, 2.0, 1.0])  # half the image looks like focal 15
    mask = np.zeros((H, W), bool)
    mask[H // 2 :] = True
    assert abs(geo.estimate_focal(bad, mask=mask) - 30.0) < 0.15
    assert abs(geo.estimate_focal(bad) - 30.0) > 1.0  # without the mask the fit is pulled away


def test_focal_degenerate_inputs_raise():
    same = np.broadcast_to(np.array([0.3, -0.2, 2.0]), (H, W, 3)).copy()
    with pytest.raises(ValueError, match="focal undefined"):
        geo.estimate_focal(same)
    with pytest.raises(ValueError, match="focal undefined"):
        geo.estimate_focal(np.full((H, W, 3), np.nan))
    with pytest.raises(ValueError):
        geo.estimate_focal(np.zeros((H, W)))


# ----------------------------------------------------------------------------- pose


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pose_exact_on_clean_pointmaps(seed):
    rng = np.random.default_rng(10 + seed)
    local, glob, c2w = make_view(rng, 35.0)
    conf = rng.uniform(1.1, 10.0, size=(H, W))
    est = geo.estimate_pose(local, glob, conf)
    assert est.shape == (4, 4) and est.dtype == np.float64
    assert rot_angle_deg(est[:3, :3], c2w[:3, :3]) < 0.1
    np.testing.assert_allclose(est[:3, 3], c2w[:3, 3], atol=1e-8)
    np.testing.assert_allclose(est[3], [0, 0, 0, 1])
    assert np.linalg.det(est[:3, :3]) == pytest.approx(1.0)


def test_pose_confidence_weighting_rejects_outliers():
    rng = np.random.default_rng(20)
    local, glob, c2w = make_view(rng, 35.0)
    noisy = glob + rng.normal(scale=0.005, size=glob.shape)
    conf = np.full((H, W), 8.0)
    out = rng.random((H, W)) < 0.2
    noisy[out] += rng.normal(scale=3.0, size=(out.sum(), 3))
    conf[out] = 1.0 + 1e-6  # weight conf - 1 ~ 0
    est = geo.estimate_pose(local, noisy, conf)
    assert rot_angle_deg(est[:3, :3], c2w[:3, :3]) < 0.3
    assert np.linalg.norm(est[:3, 3] - c2w[:3, 3]) < 0.01
    flat = geo.estimate_pose(local, noisy, np.full((H, W), 2.0))  # same outliers, no weighting
    assert np.linalg.norm(flat[:3, 3] - c2w[:3, 3]) > 3 * np.linalg.norm(est[:3, 3] - c2w[:3, 3])


def test_pose_reflection_is_fixed_to_proper_rotation():
    rng = np.random.default_rng(21)
    local, glob, _ = make_view(rng, 35.0)
    mirrored = glob * np.array([-1.0, 1.0, 1.0])  # best orthogonal fit is a reflection
    est = geo.estimate_pose(local, mirrored, np.full((H, W), 2.0))
    assert np.linalg.det(est[:3, :3]) == pytest.approx(1.0)


def test_pose_ignores_nonfinite_points():
    rng = np.random.default_rng(22)
    local, glob, c2w = make_view(rng, 35.0)
    local[0, :5] = np.nan
    glob[1, :5] = np.inf
    local[2, :5, 2] = 0.0  # zero depth point: still a valid 3D point, weight stays
    glob[2, :5] = local[2, :5] @ c2w[:3, :3].T + c2w[:3, 3]
    est = geo.estimate_pose(local, glob, np.full((H, W), 3.0))
    assert rot_angle_deg(est[:3, :3], c2w[:3, :3]) < 0.1
    np.testing.assert_allclose(est[:3, 3], c2w[:3, 3], atol=1e-8)


def test_pose_degenerate_raises_and_conf_one_falls_back_to_uniform():
    same = np.broadcast_to(np.array([0.3, -0.2, 2.0]), (H, W, 3)).copy()
    with pytest.raises(ValueError, match="pose undefined"):
        geo.estimate_pose(same, same + 1.0, np.full((H, W), 2.0))
    rng = np.random.default_rng(23)
    local, glob, c2w = make_view(rng, 35.0)
    est = geo.estimate_pose(local, glob, np.ones((H, W)))  # all weights 0 -> uniform
    np.testing.assert_allclose(est, c2w, atol=1e-8)


# ----------------------------------------------------------------------------- batch + points


def test_recover_cameras_batch_matches_single_view_and_truth():
    rng = np.random.default_rng(30)
    focals = [22.0, 41.0, 67.0]
    views = [make_view(rng, f) for f in focals]
    local = np.stack([v[0] for v in views]).astype(np.float32)
    glob = np.stack([v[1] for v in views]).astype(np.float32)
    conf = rng.uniform(1.5, 6.0, size=(3, H, W))
    k, c2w = geo.recover_cameras(torch.from_numpy(local), torch.from_numpy(glob), conf)
    assert k.shape == (3, 3, 3) and c2w.shape == (3, 4, 4)
    for i, f in enumerate(focals):
        assert abs(k[i, 0, 0] - f) / f < 5e-3 and k[i, 1, 1] == k[i, 0, 0]
        assert (k[i, 0, 2], k[i, 1, 2], k[i, 2, 2]) == (W / 2, H / 2, 1.0)
        assert rot_angle_deg(c2w[i, :3, :3], views[i][2][:3, :3]) < 0.1
        np.testing.assert_allclose(c2w[i, :3, 3], views[i][2][:3, 3], atol=1e-4)  # float32 input
        np.testing.assert_allclose(c2w[i], geo.estimate_pose(local[i], glob[i], conf[i]), atol=1e-12)
        assert k[i, 0, 0] == pytest.approx(geo.estimate_focal(local[i]), rel=1e-12)


def test_recover_cameras_names_degenerate_view():
    rng = np.random.default_rng(31)
    local, glob, _ = make_view(rng, 30.0)
    local2 = np.stack([local, np.full_like(local, np.nan)])
    with pytest.raises(ValueError, match="view 1"):
        geo.recover_cameras(local2, np.stack([glob, glob]), np.full((2, H, W), 2.0))


def test_confident_points_and_cameras():
    pts = np.zeros((2, 2, 2, 3))
    pts[0, 0, 0] = np.nan
    conf = np.array([[[5.0, 3.0], [2.9, 10.0]], [[1.0, 1.2], [1.4, 9.0]]])
    mask = geo.confident_points(pts, conf)
    # threshold 3.0 inclusive; the NaN point is dropped despite conf 5
    assert mask.tolist() == [[[False, True], [False, True]], [[False, False], [False, True]]]
    assert geo.confident_points(pts, conf, threshold=1.3).sum() == 5
    # medians: view 0 = (3.0+5.0)/2 = 4.0, view 1 = (1.2+1.4)/2 = 1.3
    assert geo.confident_cameras(conf).tolist() == [True, False]


def test_intrinsics_and_fov():
    k = geo.intrinsics(np.array([100.0]), 200, 300)
    assert k[0].tolist() == [[100.0, 0, 150.0], [0, 100.0, 100.0], [0, 0, 1.0]]
    assert geo.fov_y(100.0, 200) == pytest.approx(np.pi / 2)


def _focal_as_in_reference(pts: torch.Tensor) -> float:
    """The Weiszfeld focal of DUSt3R (arXiv 2312.14132) written out literally (torch, all-pixel means, clip at 0)."""
    h, w, _ = pts.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pix = torch.stack([cols - w / 2, rows - h / 2], -1).reshape(-1, 2).double()
    p = pts.reshape(-1, 3).double()
    a = (p[:, :2] / p[:, 2:3]).nan_to_num(posinf=0.0, neginf=0.0)
    dot_ap, dot_aa = (a * pix).sum(-1), a.square().sum(-1)
    f = dot_ap.mean() / dot_aa.mean()
    for _ in range(10):
        wgt = (pix - f * a).norm(dim=-1).clip(min=1e-8).reciprocal()
        f = (wgt * dot_ap).mean() / (wgt * dot_aa).mean()
    return float(f.clip(min=0.0))


def test_focal_default_matches_reference_procedure_on_noisy_pointmap():
    rng = np.random.default_rng(40)
    local, _, _ = make_view(rng, 45.0)
    noisy = local * (1 + rng.normal(scale=0.05, size=local.shape))
    noisy[3, :6] = np.nan
    noisy[4, :6, 2] = 0.0
    noisy[5, :3, 2] = -1.0  # behind the camera: kept, as in the reference
    ref = _focal_as_in_reference(torch.from_numpy(noisy))
    assert geo.estimate_focal(noisy) == pytest.approx(ref, rel=1e-10)
    assert abs(ref - 45.0) > 1e-3  # noise moves the estimate, so the comparison is not trivial
