"""Initial Gaussians from a bundle's annotated points: one per point (or voxel), labels carried."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.splats.init import choose_voxel, init_from_bundle, init_from_points, knn_scale, voxel_merge
from panst3r_engine.splats.model import SH_C0
from tests.bundle_utils import SEGMENT_CLASSES, make_bundle_inputs


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "job", *make_bundle_inputs())


def test_one_gaussian_per_point(bundle: Path) -> None:
    _, points, _, _ = make_bundle_inputs()
    model = init_from_bundle(bundle)
    n = len(points["xyz"])
    assert len(model) == n and model.sh_degree == 1 and model.shN.shape == (n, 3, 3)
    torch.testing.assert_close(model.means, torch.from_numpy(points["xyz"]), rtol=0, atol=0)
    assert (model.scales.exp() > 0).all() and torch.isfinite(model.scales).all()
    assert torch.equal(model.scales[:, 0], model.scales[:, 1]) and torch.equal(model.scales[:, 0], model.scales[:, 2])
    assert torch.equal(model.segment, torch.from_numpy(points["segment"]))
    expected_class = [SEGMENT_CLASSES.get(int(s), -1) if s else -1 for s in points["segment"]]
    assert model.class_id.tolist() == expected_class and model.class_id.dtype == torch.int32
    # Colour from the DC coefficient, opacity 0.1, identity rotation (float32 round trips).
    torch.testing.assert_close(
        model.sh0[:, 0] * SH_C0 + 0.5, torch.from_numpy(points["rgb"] / 255.0).float(), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(torch.sigmoid(model.opacities), torch.full((n,), 0.1), rtol=0, atol=1e-7)
    assert torch.equal(model.quats, torch.tensor([1.0, 0, 0, 0]).repeat(n, 1))


def test_knn_scale_is_mean_of_three_neighbours() -> None:
    xyz = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]])
    scale = knn_scale(xyz)
    assert scale[0] == pytest.approx((1 + 2 + 3) / 3)
    assert scale[1] == pytest.approx((1 + math.sqrt(5) + math.sqrt(10)) / 3)


def test_voxel_merge_votes_and_averages() -> None:
    xyz = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.1, 0.1], [1.5, 0.1, 0.1]])
    rgb = np.array([[0, 0, 0], [30, 60, 90], [60, 0, 0], [255, 255, 255]], np.uint8)
    segment = np.array([4, 2, 4, 0])
    mxyz, mrgb, mseg = voxel_merge(xyz, rgb, segment, voxel=1.0)
    assert len(mxyz) == 2
    np.testing.assert_allclose(mxyz[0], xyz[:3].mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mrgb[0], [30, 20, 30], rtol=0, atol=1e-12)
    assert mseg.tolist() == [4, 0]
    _, _, tie = voxel_merge(xyz[:2], rgb[:2], segment[:2], voxel=1.0)
    assert tie.tolist() == [2]  # ties go to the smallest id


def test_max_gaussians_picks_a_voxel(bundle: Path) -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 1, (5000, 3))
    xyz[:, 2] = 0.0  # a plane, like a surface scan
    voxel = choose_voxel(xyz, 800)
    assert voxel is not None and voxel > 0
    model = init_from_points(
        xyz, rng.integers(0, 256, (5000, 3)).astype(np.uint8), np.ones(5000, int), {1: 6}, max_gaussians=800
    )
    assert 400 < len(model) <= 800  # the 1.1x voxel steps land within a factor (1.1^2) of the cap
    assert model.class_id.eq(6).all()
    assert choose_voxel(xyz, 5000) is None
    small = init_from_bundle(bundle, max_gaussians=50)
    assert 0 < len(small) <= 50
    fixed = init_from_bundle(bundle, voxel=1e-6)  # tiny voxels merge nothing
    assert len(fixed) == len(make_bundle_inputs()[1]["xyz"])


def test_refusals() -> None:
    with pytest.raises(ValueError, match="no points"):
        init_from_points(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, int), {})
    with pytest.raises(ValueError, match="voxel"):
        init_from_points(np.zeros((3, 3)), np.zeros((3, 3), np.uint8), np.zeros(3, int), {}, voxel=-1.0)
