"""Oracles: ground truth fed through the engine's own stages must score perfectly.

- GT masks as query logits through every post-processing method -> PQ^scene 1.
- GT pointmaps through the pipeline's per-view ``recover_camera`` -> true K and poses.
- GT as a prediction through the evaluation driver -> PQ 1, zero camera and point errors,
  and a held-out view labelled by projecting the other views' GT points.

The scene is a ray-cast room of axis-aligned boxes (numpy only, exact depth and labels,
one consistent 3D scene); one variant repeats the post-processing oracle on a tiny
Blender render (skipped without bpy).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from panst3r_engine.eval.camera_conventions import look_at
from panst3r_engine.eval.dataset import (
    ClassInfo,
    InstanceInfo,
    SceneDataset,
    View,
    depth_to_camera_points,
    gt_pointmaps,
    panoptic_ground_truth,
    project,
    relative_poses,
)
from panst3r_engine.eval.geometry_metrics import apply_similarity
from panst3r_engine.eval.metrics import panoptic_quality_scene
from panst3r_engine.eval.run import (
    EvalOptions,
    Prediction,
    evaluate_prediction,
    processed_K,
    processing_frame,
    to_processed,
    transform_pose,
    zbuffer_labels,
)
from panst3r_engine.pipeline.cameras import ViewGeometry, recover_camera
from panst3r_engine.postprocess import METHODS, postprocess

W, H, F = 128, 96, 80.0
CLASSES = [
    ClassInfo(1, "wall", False),
    ClassInfo(2, "floor", False),
    ClassInfo(3, "ceiling", False),
    ClassInfo(4, "chair", True),
    ClassInfo(5, "table", True),
]
ROOM = (np.array([-2.0, -1.5, 0.0]), np.array([2.0, 1.5, 2.5]))
# (instance id, class id, min corner, max corner): two chairs make thing matching non-trivial.
BOXES = [
    (7, 4, (0.3, -0.6, 0.0), (0.9, 0.0, 0.8)),
    (8, 5, (-1.2, 0.2, 0.0), (-0.4, 0.9, 0.7)),
    (9, 4, (-0.5, -1.2, 0.0), (0.0, -0.7, 0.9)),
]
FACE_INSTANCE = {(0, 0): 3, (0, 1): 4, (1, 0): 5, (1, 1): 6, (2, 0): 1, (2, 1): 2}  # (axis, max side) -> id
INSTANCES = (
    [InstanceInfo(1, 2, "floor"), InstanceInfo(2, 3, "ceiling")]
    + [InstanceInfo(i, 1, f"wall_{i}") for i in (3, 4, 5, 6)]
    + [InstanceInfo(i, c, f"obj_{i}") for i, c, *_ in BOXES]
)


def _slabs(origin: np.ndarray, dirs: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray/box entry and exit distances ``[N]`` and the far planes' per-axis distances ``[N, 3]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (np.asarray(lo) - origin) / dirs, (np.asarray(hi) - origin) / dirs
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    return near.max(1), far.min(1), far


def _raycast(K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-depth and instance id ``[H, W]`` of the room seen by one OpenCV camera."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    d_cam = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones_like(cols)], -1).reshape(-1, 3)
    dirs, origin = d_cam @ c2w[:3, :3].T, c2w[:3, 3]
    _, t_room, far = _slabs(origin, dirs, *ROOM)
    axis = np.argmin(far, 1)
    depth = t_room.copy()
    inst = np.array([FACE_INSTANCE[(a, int(dirs[i, a] > 0))] for i, a in enumerate(axis)])
    for iid, _, lo, hi in BOXES:
        near, exit_, _ = _slabs(origin, dirs, lo, hi)
        hit = (near <= exit_) & (near > 0) & (near < depth)
        depth[hit], inst[hit] = near[hit], iid
    return depth.reshape(H, W).astype(np.float32), inst.reshape(H, W)


def room_scene(n_views: int = 6) -> SceneDataset:
    """Cameras on an ellipse above the furniture, looking at the room centre."""
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
    class_of = {i.id: i.class_id for i in INSTANCES}
    colours = np.random.default_rng(0).integers(30, 230, (10, 3))
    views = []
    for i in range(n_views):
        a = 2 * np.pi * i / n_views
        c2w = look_at(np.array([1.5 * np.cos(a), 1.1 * np.sin(a), 1.5]), np.array([0.0, 0.0, 0.5]))
        depth, inst = _raycast(K, c2w)
        sem = np.vectorize(class_of.get)(inst)
        views.append(
            View(f"v{i}", K, c2w, colours[inst].astype(np.uint8), depth, sem.astype(np.uint16), inst.astype(np.uint16))
        )
    return SceneDataset(CLASSES, INSTANCES, views, seed=0)


@pytest.fixture(scope="module")
def room() -> SceneDataset:
    return room_scene(12)  # 30 degrees apart: held-out views have close neighbours, as in a captured trajectory


def test_room_is_a_consistent_scene(room: SceneDataset) -> None:
    """Sanity of the oracle scene itself: every pixel hits something, every object is seen, ids recur."""
    for v in room.views:
        assert (v.depth > 0.05).all() and v.depth.max() < 6
    seen = {int(i) for v in room.views for i in np.unique(v.instance)}
    assert seen >= {1, 3, 4, 5, 6, 7, 8, 9}  # all but the ceiling (the cameras look down)


# --------------------------------------------------------------------------- post-processing oracle


def gt_queries(scene: SceneDataset, n_empty: int = 3) -> tuple[torch.Tensor, list[torch.Tensor], list]:
    """One query per GT segment (class, thing id or 0 for stuff) with +-20 logits; plus empty queries.

    Masks are the GT maps themselves, handed over as the stride-2 masks of an
    output twice the GT size, so bilinear upsampling reproduces GT exactly at the
    even output pixels.
    """
    things = set(scene.thing_classes)
    sem, inst = panoptic_ground_truth(scene)
    keys = sorted(
        {(int(c), int(i) if c in things else 0) for s, n in zip(sem, inst) for c, i in zip(s.ravel(), n.ravel()) if c}
    )
    num_cls = max(c.id for c in scene.classes)
    logits = torch.full((len(keys) + n_empty, num_cls), -20.0)
    masks = [torch.full((len(keys) + n_empty, *s.shape), -20.0) for s in sem]
    for q, (c, i) in enumerate(keys):
        logits[q, c - 1] = 20.0
        for v, (s, n) in enumerate(zip(sem, inst)):
            region = (s == c) & ((n == i) if c in things else True)
            masks[v][q][torch.from_numpy(region)] = 20.0
    shapes = [(2 * s.shape[0], 2 * s.shape[1]) for s in sem]
    return logits, masks, shapes


def assert_postprocess_oracle(scene: SceneDataset, method: str) -> None:
    logits, masks, shapes = gt_queries(scene)
    result = postprocess(logits, masks, shapes, method=method)
    category = {s["id"]: s["category_id"] + 1 for s in result.segments}
    pred_inst = [p[::2, ::2].astype(np.int64) for p in result.pan]
    pred_sem = [np.vectorize(lambda i: category.get(int(i), 0))(p) for p in pred_inst]
    sem, inst = panoptic_ground_truth(scene)
    r = panoptic_quality_scene(pred_sem, pred_inst, sem, inst, scene.thing_classes, scene.stuff_classes)
    assert r["pq"] == pytest.approx(1.0), (method, r["per_class"])
    ref = panoptic_quality_scene(sem, inst, sem, inst, scene.thing_classes, scene.stuff_classes)
    assert r["classes_scored"] == ref["classes_scored"] and len(r["classes_scored"]) >= 3
    assert len(result.segments) == logits.shape[0] - 3  # every GT segment kept, every empty query dropped


@pytest.mark.parametrize("method", METHODS)
def test_gt_masks_through_postprocessing_score_pq_one(room: SceneDataset, method: str) -> None:
    assert_postprocess_oracle(room_scene(3), method)


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy (Blender as a module) is not installed")
@pytest.mark.parametrize("method", METHODS)
def test_blender_gt_masks_through_postprocessing_score_pq_one(blender_scene: SceneDataset, method: str) -> None:
    assert_postprocess_oracle(blender_scene, method)


@pytest.fixture(scope="module")
def blender_scene(tmp_path_factory: pytest.TempPathFactory) -> SceneDataset:
    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.eval.synthetic import generate_scene

    try:
        import bpy  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy does not import: {exc}")
    return read_scene(
        generate_scene(tmp_path_factory.mktemp("oracle") / "scene", seed=4, num_views=3, width=64, height=48, fast=True)
    )


# --------------------------------------------------------------------------- camera recovery oracle


def test_gt_pointmaps_through_recover_camera_give_true_cameras(room: SceneDataset) -> None:
    """The pipeline's per-view function: local = camera-frame GT, global = GT in view 0's frame."""
    rel = relative_poses(room, 0)
    for i, v in enumerate(room.views):
        local = depth_to_camera_points(v.depth, v.K)
        view = ViewGeometry(gt_pointmaps(room, i, reference=0), local, np.full(v.depth.shape, 10.0))
        cam = recover_camera(view)
        assert cam.valid and cam.focal == pytest.approx(F, rel=1e-6)
        np.testing.assert_allclose(cam.K, v.K, atol=1e-5)
        np.testing.assert_allclose(cam.cam_to_world, rel[i], atol=1e-6)


# --------------------------------------------------------------------------- evaluation-driver oracle

# The "predicted" frame: GT world under a known similarity, as a reconstruction up to scale would be.
_ROT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
TO_PRED = (0.37, _ROT, np.array([0.5, -2.0, 1.0]))


def gt_prediction(scene: SceneDataset, inputs: list[int], resize: str) -> Prediction:
    """The perfect prediction for ``inputs``, in the processed frame and the TO_PRED frame."""
    pan, boxes, K, c2w, xyz, view, pixel = [], [], [], [], [], [], []
    for i, v in enumerate(inputs):
        sv = scene.views[v]
        box, size = processing_frame(sv.width, sv.height, resize)
        pan.append(to_processed(sv.instance.astype(np.int64), box, size))
        pts = to_processed(gt_pointmaps(scene, v), box, size).reshape(-1, 3)
        rows, cols = np.divmod(np.arange(len(pts)), size[0])
        xyz.append(apply_similarity(pts, *TO_PRED))
        view.append(np.full(len(pts), i))
        pixel.append(np.stack([cols, rows], 1))
        boxes.append(box)
        K.append(processed_K(sv.K, box, size))
        c2w.append(transform_pose(sv.cam_to_world, TO_PRED))
    lut = np.zeros(max(i.id for i in scene.instances) + 1, np.int64)
    for inst in scene.instances:
        lut[inst.id] = inst.class_id
    segment = np.concatenate([p.ravel() for p in pan])
    return Prediction(
        pan,
        lut,
        boxes,
        np.stack(K),
        np.stack(c2w),
        np.array([k[0, 0] for k in K]),
        np.concatenate(xyz),
        np.concatenate(view),
        np.concatenate(pixel),
        segment,
    )


@pytest.mark.parametrize("resize", ["none", "512"])
def test_gt_prediction_scores_perfectly_on_input_views(room: SceneDataset, resize: str) -> None:
    inputs = list(range(len(room.views) if resize == "none" else 4))  # 512: 16x the points, keep it quick
    r = evaluate_prediction(room, gt_prediction(room, inputs, resize), inputs, [], EvalOptions(resize=resize))
    pan, geo = r["panoptic"], r["geometry"]
    assert pan["pq"] == pytest.approx(1.0) and pan["miou"] == pytest.approx(1.0)
    assert pan["unfiltered"]["pq"] == pytest.approx(1.0) and pan["per_view_pq"] == pytest.approx([1.0] * len(inputs))
    assert geo["cameras"]["rot_err_deg_mean"] < 1e-4 and geo["cameras"]["trans_err_mean"] < 1e-9
    assert geo["focal"]["mean"] < 1e-12
    tol = 1e-9 if resize == "none" else 5e-3  # 512: chamfer on two different 200k subsamples (metres)
    assert geo["points"]["accuracy"] < tol and geo["points"]["completeness"] < tol
    assert geo["points"]["pointmap_error_mean"] < 1e-9
    assert geo["points"]["scale"] == pytest.approx(1 / TO_PRED[0])


@pytest.mark.parametrize("resize", ["none", "512"])
def test_gt_points_projected_into_held_out_views(room: SceneDataset, resize: str) -> None:
    """Labels from the other views' points land on the right objects; PQ stays high.

    Not 1: surfaces no input view saw (a chair side facing only the held-out
    camera) show whatever lies behind them. At 512 the oracle's points are the
    128x96 GT pixels repeated 16 times (sparse), so the point footprint is needed there.
    """
    held = [0, 4, 8] if resize == "none" else [4]
    inputs = [i for i in range(len(room.views)) if i not in held and (resize == "none" or abs(i - 4) <= 2)]
    pred = gt_prediction(room, inputs, resize)
    opts = EvalOptions(resize=resize, point_radius=0 if resize == "none" else 1)
    r = evaluate_prediction(room, pred, inputs, held, opts)
    assert r["views"]["held_out"] == [f"v{i}" for i in held] and r["panoptic"]["label_source"] == "points"
    assert r["panoptic"]["pq"] > 0.9 and r["panoptic"]["miou"] > 0.85
    assert r["panoptic_input_views"]["pq"] == pytest.approx(1.0)
    v = room.views[4]
    box, size = processing_frame(v.width, v.height, resize)
    ids = zbuffer_labels(
        pred.xyz,
        pred.segment,
        processed_K(v.K, box, size),
        transform_pose(v.cam_to_world, TO_PRED),
        size,
        opts.point_radius,
        opts.fill_radius,
    )
    truth = to_processed(v.instance.astype(np.int64), box, size)
    covered = ids > 0
    assert covered.mean() > 0.9 and (ids[covered] == truth[covered]).mean() > 0.93


@pytest.mark.parametrize("resize", ["none", "512"])
def test_processed_maps_and_intrinsics_agree(room: SceneDataset, resize: str) -> None:
    """A processed pixel's GT point projects (processed K) within half a source pixel of that pixel."""
    v = room.views[2]
    box, size = processing_frame(v.width, v.height, resize)
    pts = to_processed(gt_pointmaps(room, 2), box, size)
    uv, _ = project(pts, processed_K(v.K, box, size), v.cam_to_world)
    rows, cols = np.mgrid[0 : size[1], 0 : size[0]]
    half = 0.5 * size[0] / (box[2] - box[0])
    assert np.abs(uv - np.stack([cols, rows], -1)).max() <= half + 1e-6
    if resize == "none":  # and the z-buffer puts every pixel's own label back
        truth = v.instance.astype(np.int64)
        ids = zbuffer_labels(pts.reshape(-1, 3), truth.ravel(), v.K, v.cam_to_world, size, fill_radius=0)
        np.testing.assert_array_equal(ids, truth)


def test_processing_frame_matches_the_loader(tmp_path) -> None:
    from PIL import Image

    from panst3r_engine.pipeline.images import load_photo

    for w, h in [(300, 300), (640, 480), (240, 320), (128, 96)]:
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "p.png")
        photo = load_photo(tmp_path / "p.png", "512")
        assert processing_frame(w, h, "512") == (tuple(photo.crop_box), tuple(photo.processed_size))
    assert processing_frame(128, 96, "none") == ((0, 0, 128, 96), (128, 96))
