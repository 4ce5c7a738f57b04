"""Synthetic scene generator: seeded layout (always) and a tiny real Blender render (skipped without bpy)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from panst3r_engine.eval.camera_conventions import (
    blender_intrinsics,
    blender_to_opencv,
    opencv_to_blender,
    pixel_centre_shift,
)
from panst3r_engine.eval.dataset import (
    depth_to_camera_points,
    gt_pointmaps,
    panoptic_ground_truth,
    project,
    read_scene,
    relative_poses,
)
from panst3r_engine.eval.metrics import panoptic_quality_scene
from panst3r_engine.eval.scene_layout import CLASS_ID, FURNITURE, sample_layout
from panst3r_engine.geometry import recover_cameras

SEED, VIEWS, W, H = 3, 3, 64, 48
needs_bpy = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None,
    reason="bpy (Blender as a module, pip install bpy==5.0.1, Python 3.11) is not installed",
)


# --------------------------------------------------------------------------- layout (no Blender)


@pytest.mark.parametrize("path", ["orbit", "walk"])
def test_layout_is_seeded_and_sane(path: str) -> None:
    a, b = sample_layout(5, 4, W, H, path), sample_layout(5, 4, W, H, path)
    np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    assert [(o.name, o.location) for o in a.objects] == [(o.name, o.location) for o in b.objects]
    assert [o.instance_id for o in a.objects] == list(range(1, len(a.objects) + 1))
    rx, ry, rz = a.size
    eyes = a.cam_to_world[:, :3, 3]
    assert (np.abs(eyes[:, 0]) < rx / 2).all() and (np.abs(eyes[:, 1]) < ry / 2).all() and (eyes[:, 2] < rz).all()
    target = np.array(a.meta["target"])
    for c2w in a.cam_to_world:  # each camera looks at the target: it projects to the principal point
        uv, z = project(target, a.K, c2w)
        assert z > 0 and np.allclose(uv, [W / 2, H / 2], atol=1e-9)
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)


def test_layout_varies_with_seed_and_uses_vocabulary() -> None:
    counts = []
    for seed in range(12):
        lay = sample_layout(seed)
        names = [o.class_name for o in lay.objects]
        assert names[:2] == ["floor", "ceiling"] and names.count("wall") == 4 and {"door", "window"} <= set(names)
        assert all(n in CLASS_ID for n in names)
        counts.append(sum(n in FURNITURE for n in names))
    assert min(counts) >= 2 and max(counts) <= 6 and len(set(counts)) > 1
    assert sample_layout(0).size != sample_layout(1).size
    with pytest.raises(ValueError, match="camera path"):
        sample_layout(0, path="fly")


def test_camera_conversions() -> None:
    c2w = sample_layout(2).cam_to_world[1]
    np.testing.assert_allclose(blender_to_opencv(opencv_to_blender(c2w)), c2w, atol=1e-12)
    K = blender_intrinsics(24.0, 36.0, 128, 96, *pixel_centre_shift(128, 96))
    np.testing.assert_allclose(K, [[24 / 36 * 128, 0, 64], [0, 24 / 36 * 128, 48], [0, 0, 1]], atol=1e-12)


# --------------------------------------------------------------------------- real render


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-view 64x48 scene rendered once (1 sample) through the CLI entry point."""
    try:
        import bpy  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy is installed but does not import: {exc}")
    from panst3r_engine.eval.synthetic import main  # noqa: PLC0415

    out = tmp_path_factory.mktemp("synth") / "scene"
    assert (
        main([str(out), "--seed", str(SEED), "--views", str(VIEWS), "--width", str(W), "--height", str(H), "--fast"])
        == 0
    )
    return out


@needs_bpy
def test_files_exist(rendered: Path) -> None:
    for sub, ext in (("images", "png"), ("depth", "npy"), ("semantic", "png"), ("instance", "png")):
        assert sorted(p.name for p in (rendered / sub).iterdir()) == [f"view_{i:03d}.{ext}" for i in range(VIEWS)]
    s = read_scene(rendered)
    assert len(s.views) == VIEWS and all((v.width, v.height) == (W, H) for v in s.views)
    assert s.seed == SEED and s.meta["fast"] is True


@needs_bpy
def test_ids_consistent_across_views(rendered: Path) -> None:
    s = read_scene(rendered)
    class_of = s.class_of_instance()
    seen: dict[int, set[int]] = {}
    for v in s.views:
        assert v.instance.min() > 0, "a closed room: every pixel sees some object"
        for i in np.unique(v.instance):
            classes = np.unique(v.semantic[v.instance == i])
            assert classes.tolist() == [class_of[int(i)]], f"instance {i} has classes {classes} in {v.stem}"
            seen.setdefault(int(i), set()).add(v.stem)
    assert sum(len(stems) > 1 for stems in seen.values()) >= 3  # floor, walls, ... recur with the same id


@needs_bpy
def test_depth_positive_on_geometry(rendered: Path) -> None:
    for v in read_scene(rendered).views:
        assert (v.depth[v.instance > 0] > 0.05).all() and v.depth.max() < 10.0


@needs_bpy
@pytest.mark.parametrize("a,b", [(0, 1), (1, 2), (2, 0)])
def test_reprojection_lands_on_same_instance(rendered: Path, a: int, b: int) -> None:
    """View a's depth back-projected and seen from view b hits the same instance (validates K and poses)."""
    s = read_scene(rendered)
    va, vb = s.views[a], s.views[b]
    uv, z = project(gt_pointmaps(s, a), vb.K, vb.cam_to_world)
    col, row = np.rint(uv[..., 0]), np.rint(uv[..., 1])
    inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    ci, ri = col[inside].astype(int), row[inside].astype(int)
    visible = np.abs(vb.depth[ri, ci] - z[inside]) < 0.03 * z[inside]
    # Wrong K or poses make depths agree only by chance; furniture near a camera legitimately hides some points.
    assert inside.sum() > 0.1 * W * H and visible.sum() > max(100, 0.2 * inside.sum()), "few co-visible pixels"
    same = vb.instance[ri, ci][visible] == va.instance[inside][visible]
    assert same.mean() >= 0.9


@needs_bpy
def test_cameras_match_blenders_own_projection(rendered: Path) -> None:
    """Stored K and pose project world points exactly where Blender's camera does."""
    import mathutils  # noqa: PLC0415
    from bpy_extras.object_utils import world_to_camera_view  # noqa: PLC0415

    from panst3r_engine.eval.blender_render import build_scene  # noqa: PLC0415

    s = read_scene(rendered)
    scene, cams = build_scene(sample_layout(SEED, VIEWS, W, H))
    pts = np.random.default_rng(0).uniform([-2, -1.5, 0.2], [2, 1.5, 2.2], (50, 3))
    for v, cam in zip(s.views, cams, strict=True):
        uv, z = project(pts, v.K, v.cam_to_world)
        ndc = np.array([world_to_camera_view(scene, cam, mathutils.Vector(p)) for p in pts])
        front = z > 0.1
        np.testing.assert_allclose(uv[front, 0], ndc[front, 0] * W - 0.5, atol=1e-3)
        np.testing.assert_allclose(uv[front, 1], (1 - ndc[front, 1]) * H - 0.5, atol=1e-3)
        np.testing.assert_allclose(z[front], ndc[front, 2], rtol=1e-5)


@needs_bpy
def test_ground_truth_pq_is_one(rendered: Path) -> None:
    s = read_scene(rendered)
    sem, inst = panoptic_ground_truth(s)
    r = panoptic_quality_scene(sem, inst, sem, inst, s.thing_classes, s.stuff_classes)
    assert r["pq"] == pytest.approx(1.0) and len(r["classes_scored"]) >= 3


@needs_bpy
def test_oracle_recovers_true_cameras(rendered: Path) -> None:
    """GT pointmaps through the engine's camera recovery give the true focal and relative poses."""
    s = read_scene(rendered)
    local = np.stack([depth_to_camera_points(v.depth, v.K) for v in s.views])
    glob = np.stack([gt_pointmaps(s, i, reference=0) for i in range(VIEWS)])
    mask = np.isfinite(local).all(-1)
    K, c2w = recover_cameras(np.nan_to_num(local), np.nan_to_num(glob), np.full(mask.shape, 100.0), mask)
    np.testing.assert_allclose(K, np.stack([v.K for v in s.views]), rtol=1e-6, atol=1e-6)
    rel = relative_poses(s, 0)
    np.testing.assert_allclose(c2w[:, :3, :3], rel[:, :3, :3], atol=1e-6)
    np.testing.assert_allclose(c2w[:, :3, 3], rel[:, :3, 3], atol=1e-5)  # metres
