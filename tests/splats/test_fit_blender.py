"""Splat quality on a Blender-rendered room with known cameras: held-out PSNR and labels before/after the fit.

A seeded room (panst3r_engine.eval.synthetic) is rendered into 8 views at 96x72; every 4th view (2 and 6, each
between two training views on the orbit) is held out. The other 6 become a ground-truth bundle
(panst3r_engine.splats.from_scene: a point per pixel from the true depth, coloured from the photo, labelled with
its instance and class), which is fitted for 150 steps with at most 5000 Gaussians on one thread. The Blender
tests skip without bpy; the bundle builder's own tests run everywhere.

Measured on this configuration (CPU, 1 thread, fit seed 0), scene seeds 0 / 1 / 2:

    held-out PSNR       8.92 -> 19.96 | 9.53 -> 23.53 | 9.80 -> 25.72 dB   (gain 11.0 / 14.0 / 15.9)
    instance accuracy  0.591 -> 0.881 | 0.670 -> 0.915 | 0.729 -> 0.934
    class accuracy     0.595 -> 0.894 | 0.672 -> 0.922 | 0.730 -> 0.940
    majority label     0.350 / 0.367 / 0.379 (instance), 0.412 / 0.468 / 0.439 (class)

and on seed 0 with fit seeds 1 and 2: 19.97 / 19.95 dB, instance 0.868 / 0.878, class 0.888 / 0.895. About 20 s
per run (2.5 s of it Blender) on the shared 2-core machine. The test uses seed 0, the hardest of the three.

"Before" is the initial Gaussians (one per voxel of points, opacity 0.1, isotropic): translucent and blurred,
so they render dark (about 9 dB) and leave many pixels below the 0.5 coverage that reads as a label.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.eval.dataset import ClassInfo, InstanceInfo, SceneDataset, View, project
from panst3r_engine.eval.ground_truth import (
    bundle_from_scene,
    evaluate_views,
    holdout_split,
    majority_baseline,
    splat_K,
)
from panst3r_engine.splats import fit_bundle

pytestmark = pytest.mark.slow  # minutes of real jobs: run by CI with -m slow

SEED, VIEWS, W, H, SAMPLES = 0, 8, 96, 72, 4
HOLDOUT_EVERY, STRIDE, STEPS, GAUSSIANS = 4, 1, 150, 5000

# Floors, from the measurements in the module docstring (the minimum over scene seeds 0-2 and fit seeds 0-2,
# which is scene seed 0, the one tested):
# - PSNR: the fit gained at least 11.0 dB; asserting 8 dB leaves 3 dB for other BLAS builds, CPUs and Cycles/OIDN
#   versions. After-fit PSNR was at least 19.95 dB; the floor is 17 dB.
# - Labels: at least 0.868 (instance) and 0.888 (class); the floors sit 0.05 lower (the fit seed alone moved them
#   by 0.013). Both are far above the majority-label baseline (0.35-0.38 instance, 0.41-0.47 class), which we
#   also require to beat by 0.3, and above the initial Gaussians (0.59-0.73).
PSNR_GAIN, PSNR_FLOOR = 8.0, 17.0
INSTANCE_FLOOR, CLASS_FLOOR, OVER_MAJORITY = 0.82, 0.84, 0.3

needs_bpy = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None,
    reason="bpy (Blender as a module, pip install bpy==5.0.1, Python 3.11) is not installed",
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """(held-out views, scores before, scores after, fit result, bundle path) of the seed-0 room."""
    try:
        import bpy  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy is installed but does not import: {exc}")
    from panst3r_engine.eval.dataset import read_scene  # noqa: PLC0415
    from panst3r_engine.eval.synthetic import generate_scene  # noqa: PLC0415

    root = tmp_path_factory.mktemp("blender_splats")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run outside the per-test thread fixture (see conftest)
    try:
        # 4 denoised samples instead of fast mode's 1 noisy one: 1.5 s more, and the held-out photos are
        # something a fit can match (1-sample noise would dominate the PSNR).
        generate_scene(root / "scene", seed=SEED, num_views=VIEWS, width=W, height=H, samples=SAMPLES)
        scene = read_scene(root / "scene")
        train, held = holdout_split(len(scene.views), HOLDOUT_EVERY)
        bundle = bundle_from_scene(scene, train, root / "bundle", stride=STRIDE)
        result = fit_bundle(bundle, steps=STEPS, max_gaussians=GAUSSIANS, seed=0)
        views = [scene.views[i] for i in held]
        before, after = evaluate_views(result.initial, views), evaluate_views(result.model, views)
    finally:
        torch.set_num_threads(threads)
    return views, before, after, result, bundle


@needs_bpy
def test_held_out_psnr_improves(fitted) -> None:
    _, before, after, result, _ = fitted
    assert after.psnr > before.psnr + PSNR_GAIN, (before, after)
    assert after.psnr > PSNR_FLOOR, after
    assert result.stats["psnr_after"] > after.psnr  # training views fit better than novel ones


@needs_bpy
def test_held_out_labels(fitted) -> None:
    views, before, after, _, _ = fitted
    majority_instance, majority_class = majority_baseline(views)
    assert after.instance_acc > INSTANCE_FLOOR and after.class_acc > CLASS_FLOOR, after
    assert after.instance_acc > before.instance_acc and after.class_acc > before.class_acc, (before, after)
    assert after.instance_acc > majority_instance + OVER_MAJORITY, (after, majority_instance)
    assert after.class_acc > majority_class + OVER_MAJORITY, (after, majority_class)


@needs_bpy
def test_ground_truth_bundle(fitted) -> None:
    _, _, _, result, bundle_path = fitted
    bundle = read_bundle(bundle_path)
    assert [im["stem"] for im in bundle.manifest["images"]] == [f"view_{i:03d}" for i in (0, 1, 3, 4, 5, 7)]
    assert len(bundle.points["xyz"]) == 6 * W * H  # stride 1, a closed room: every pixel has depth
    classes = {s["id"]: s["class_id"] for s in bundle.manifest["segments"]}
    model = result.model
    assert all(classes[int(s)] == int(c) for s, c in zip(model.segment[:200], model.class_id[:200]))


# ---------------------------------------------------------------- the builder, without Blender
def tiny_scene() -> SceneDataset:
    """Two 8x6 views of a wall 2 m ahead (instance 1, class 1) with a box patch (instance 2, class 2)."""
    views = []
    for i, x in enumerate((0.0, 0.3)):
        K = np.array([[6.0, 0, 4.0], [0, 6.0, 3.0], [0, 0, 1]])
        c2w = np.eye(4)
        c2w[0, 3] = x
        instance = np.ones((6, 8), np.uint16)
        instance[2:4, 3:6] = 2
        depth = np.full((6, 8), 2.0, np.float32)
        depth[0, 0] = 0.0  # no hit: no point
        image = np.random.default_rng(i).integers(0, 256, (6, 8, 3)).astype(np.uint8)
        views.append(View(f"v{i}", K, c2w, image, depth, instance.copy(), instance))
    return SceneDataset(
        [ClassInfo(1, "wall", False), ClassInfo(2, "box", True)],
        [InstanceInfo(1, 1, "wall_1"), InstanceInfo(2, 2, "box_2")],
        views,
        seed=7,
    )


def test_bundle_from_scene_points(tmp_path: Path) -> None:
    scene = tiny_scene()
    path = bundle_from_scene(scene, ["v1"], tmp_path / "b", stride=1)
    bundle = read_bundle(path)
    pts = bundle.points
    assert len(pts["xyz"]) == 8 * 6 - 1 and (pts["view"] == 0).all()
    v = scene.views[1]
    col, row = pts["pixel"][:, 0].astype(int), pts["pixel"][:, 1].astype(int)
    np.testing.assert_array_equal(pts["rgb"], v.image[row, col])
    np.testing.assert_array_equal(pts["segment"], v.instance[row, col])
    uv, z = project(pts["xyz"].astype(np.float64), v.K, v.cam_to_world)  # index coordinates
    np.testing.assert_allclose(uv, np.stack([col, row], 1), atol=1e-4)
    np.testing.assert_allclose(z, 2.0, atol=1e-5)
    cam = bundle.manifest["cameras"][0]
    np.testing.assert_allclose(cam["K"], splat_K(v.K))  # pixel centres at +0.5
    np.testing.assert_allclose(np.asarray(cam["K"])[:2, 2], [4.5, 3.5])
    np.testing.assert_allclose(cam["cam_to_world"], v.cam_to_world)
    assert {s["id"]: s["class_id"] for s in bundle.manifest["segments"]} == {1: 1, 2: 2}
    assert bundle.image("v1").shape == (6, 8, 3)


def test_bundle_from_scene_stride(tmp_path: Path) -> None:
    bundle = read_bundle(bundle_from_scene(tiny_scene(), None, tmp_path / "b", stride=2))
    pts = bundle.points
    assert len(pts["xyz"]) == 2 * (4 * 3 - 1)  # (0, 0) has no depth in either view
    assert (pts["pixel"] % 2 == 0).all() and sorted(set(pts["view"].tolist())) == [0, 1]
    with pytest.raises(ValueError, match="stride"):
        bundle_from_scene(tiny_scene(), None, tmp_path / "c", stride=0)


def test_holdout_split() -> None:
    assert holdout_split(8, 4) == ([0, 1, 3, 4, 5, 7], [2, 6])
    assert holdout_split(12, 4)[1] == [2, 6, 10]
    assert holdout_split(9, 3) == ([0, 2, 3, 5, 6, 8], [1, 4, 7])
    with pytest.raises(ValueError):
        holdout_split(8, 1)
    with pytest.raises(ValueError):
        holdout_split(1, 2)


def test_majority_baseline() -> None:
    views = tiny_scene().views
    inst, cls = majority_baseline(views)
    assert inst == pytest.approx(42 / 48) and cls == pytest.approx(42 / 48)
