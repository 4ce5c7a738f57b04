"""Scene folder format, ground-truth helpers and the Panoptic Lifting reader, on small synthetic arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.eval.dataset import (
    ClassInfo,
    DatasetError,
    InstanceInfo,
    SceneDataset,
    View,
    depth_to_camera_points,
    gt_pointmaps,
    panoptic_ground_truth,
    project,
    read_scene,
    relative_poses,
    write_scene,
)
from panst3r_engine.eval.metrics import panoptic_quality_scene
from panst3r_engine.eval.panoptic_lifting import REDUCED_SCANNET_CLASSES, read_panoptic_lifting
from panst3r_engine.geometry import recover_cameras

H, W = 12, 16


def _pose(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = t
    return T


def _K(f: float = 14.0) -> np.ndarray:
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])


def _scene(n: int = 3, seed: int = 0) -> SceneDataset:
    """n views of a fronto-parallel wall (stuff) with a thing instance spanning views."""
    rng = np.random.default_rng(seed)
    views = []
    for i in range(n):
        sem = np.ones((H, W), np.uint16)
        inst = np.full((H, W), 3, np.uint16)
        sem[4:8, 2 + i : 8 + i], inst[4:8, 2 + i : 8 + i] = 2, 7  # the chair, same id in every view
        depth = (2.0 + rng.uniform(0, 0.5, (H, W))).astype(np.float32)
        depth[0, 0] = 0.0  # no hit
        views.append(
            View(
                f"v{i}",
                _K(),
                _pose(0.1 * i, (0.2 * i, 0.0, 0.05 * i)),
                rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
                depth,
                sem,
                inst,
            )
        )
    return SceneDataset(
        [ClassInfo(1, "wall", False), ClassInfo(2, "chair", True)],
        [InstanceInfo(3, 1, "wall_3"), InstanceInfo(7, 2, "chair_7")],
        views,
        seed=seed,
        meta={"note": "test"},
    )


def test_write_read_roundtrip_is_exact(tmp_path: Path) -> None:
    s = _scene()
    out = write_scene(s, tmp_path / "scene")
    r = read_scene(out)
    assert r.classes == s.classes and r.instances == s.instances and r.seed == 0 and r.meta == {"note": "test"}
    for a, b in zip(s.views, r.views, strict=True):
        assert a.stem == b.stem and b.depth.dtype == np.float32 and b.semantic.dtype == np.uint16
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.semantic, b.semantic)
        np.testing.assert_array_equal(a.instance, b.instance)
        np.testing.assert_allclose(a.K, b.K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, rtol=0, atol=1e-12)
    meta = json.loads((out / "scene.json").read_text())
    assert meta["format"] == "panst3r-synthetic-1" and meta["views"][0]["width"] == W
    assert sorted(p.name for p in out.iterdir()) == ["depth", "images", "instance", "scene.json", "semantic"]
    assert [v.stem for v in read_scene(out, stems=["v2", "v0"]).views] == ["v2", "v0"]


def test_optional_maps_and_jpeg_photo(tmp_path: Path) -> None:
    s = _scene(1)
    v = s.views[0]
    v.depth = v.semantic = v.instance = None
    v.image_file = "view_0.jpg"
    v.image = np.broadcast_to(np.linspace(0, 255, W, dtype=np.uint8)[None, :, None], (H, W, 3)).copy()
    r = read_scene(write_scene(s, tmp_path / "s"))
    assert (tmp_path / "s" / "view_0.jpg").is_file() and r.views[0].depth is None and r.views[0].semantic is None
    assert np.abs(r.views[0].image.astype(int) - v.image).max() < 8  # JPEG quality 90 of a smooth ramp


def test_write_refuses_unrelated_folder_but_replaces_scene(tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not an empty or replaceable"):
        write_scene(_scene(), other)
    assert (other / "keep.txt").is_file()
    target = write_scene(_scene(2), tmp_path / "s")
    write_scene(_scene(1), target)
    assert len(read_scene(target).views) == 1
    with pytest.raises(DatasetError):
        write_scene(_scene(1), target, overwrite=False)


def test_read_errors_are_sentences(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no scene.json"):
        read_scene(tmp_path)
    (tmp_path / "scene.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DatasetError, match="format"):
        read_scene(tmp_path)
    out = write_scene(_scene(), tmp_path / "s")
    with pytest.raises(DatasetError, match="no views"):
        read_scene(out, stems=["nope"])


def test_validate_rejects_bad_ids_and_shapes(tmp_path: Path) -> None:
    s = _scene()
    s.instances.append(InstanceInfo(9, 5, "ghost"))
    with pytest.raises(DatasetError, match="unknown class"):
        write_scene(s, tmp_path / "a")
    s = _scene()
    s.views[1].depth = s.views[1].depth[:-1]
    with pytest.raises(DatasetError, match="depth"):
        write_scene(s, tmp_path / "b")


def test_ground_truth_scores_pq_one_against_itself() -> None:
    s = _scene()
    sem, inst = panoptic_ground_truth(s)
    r = panoptic_quality_scene(sem, inst, sem, inst, s.thing_classes, s.stuff_classes)
    assert r["pq"] == pytest.approx(1.0) and r["classes_scored"] == [1, 2]


def test_pointmaps_reproject_to_their_pixels() -> None:
    s = _scene()
    v = s.views[1]
    pts = gt_pointmaps(s, 1)
    assert np.isnan(pts[0, 0]).all() and np.isfinite(pts[1:]).all()
    uv, z = project(pts, v.K, v.cam_to_world)
    rows, cols = np.mgrid[0:H, 0:W]
    ok = np.isfinite(z)
    np.testing.assert_allclose(uv[ok], np.stack([cols, rows], -1)[ok], atol=1e-9)
    np.testing.assert_allclose(z[ok], v.depth[ok], rtol=1e-6)
    local = gt_pointmaps(s, "v1", reference=1)
    np.testing.assert_allclose(local[ok], depth_to_camera_points(v.depth, v.K)[ok], atol=1e-9)


def test_oracle_pointmaps_recover_true_cameras() -> None:
    """Exact local/global pointmaps through the engine's camera recovery give back K and relative poses."""
    s = _scene(4, seed=3)
    local = np.stack([depth_to_camera_points(v.depth, v.K) for v in s.views])
    glob = np.stack([gt_pointmaps(s, i, reference=0) for i in range(4)])
    mask = np.isfinite(local).all(-1)
    K, c2w = recover_cameras(np.nan_to_num(local), np.nan_to_num(glob), np.full(mask.shape, 10.0), mask)
    np.testing.assert_allclose(K, np.stack([v.K for v in s.views]), atol=1e-6)
    np.testing.assert_allclose(c2w, relative_poses(s, 0), atol=1e-9)


# --------------------------------------------------------------------------- Panoptic Lifting


def _write_matrix(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{x:.9f}" for x in row) for row in m))


def _panlift_folder(root: Path, use_transforms: bool = False) -> dict:
    """A tiny scene in Panoptic Lifting's preprocessed layout (ScanNet-style stems, one bad pose)."""
    rng = np.random.default_rng(1)
    stems = ["0", "5", "10", "15"]
    K = np.array([[20.0, 0, 7.5, 0], [0, 21.0, 5.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    poses = {s: _pose(0.05 * i, (0.1 * i, 0, 0)) for i, s in enumerate(stems)}
    for sub in ("color", "depth", "rs_semantics", "rs_instance"):
        (root / sub).mkdir(parents=True)
    for i, s in enumerate(stems):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "color" / f"{s}.jpg")
        Image.fromarray(np.full((H // 2, W // 2), 1500 + i, np.uint16)).save(root / "depth" / f"{s}.png")  # half size
        sem = np.ones((H, W), np.uint8)
        inst = np.zeros((H, W), np.uint8)
        sem[3:6, 3:9], inst[3:6, 3:9] = 5, 4  # chair, thing id 4
        Image.fromarray(sem).save(root / "rs_semantics" / f"{s}.png")
        Image.fromarray(inst).save(root / "rs_instance" / f"{s}.png")
        if not use_transforms:
            bad = poses[s].copy()
            if s == "10":
                bad[0, 3] = -np.inf
            _write_matrix(root / "pose" / f"{s}.txt", bad)
    if use_transforms:
        gl = {s: (poses[s] @ np.diag([1, -1, -1, 1.0])).tolist() for s in stems}  # OpenGL camera axes
        frames = [{"file_path": f"{s}.jpg", "transform_matrix": gl[s]} for s in stems]
        cams = {"fl_x": 20.0, "fl_y": 21.0, "cx": 7.5, "cy": 5.5, "frames": frames}
        (root / "transforms.json").write_text(json.dumps(cams))
    else:
        _write_matrix(root / "intrinsic" / "intrinsic_color.txt", K)
    (root / "splits.json").write_text(json.dumps({"train": ["0", "10", "15"], "test": ["5", "10"]}))
    return {"K": K[:3, :3], "poses": poses}


def test_panoptic_lifting_reader(tmp_path: Path) -> None:
    info = _panlift_folder(tmp_path)
    s = read_panoptic_lifting(tmp_path, split="test")
    assert [v.stem for v in s.views] == ["5"] and s.meta["skipped"] == ["10"]
    v = s.views[0]
    np.testing.assert_allclose(v.K, info["K"])
    np.testing.assert_allclose(v.cam_to_world, info["poses"]["5"], atol=1e-8)
    assert v.depth.shape == (H, W) and np.allclose(v.depth, 1.501)
    assert [c.name for c in s.classes][:3] == ["wall", "floor", "cabinet"]
    assert len(s.classes) == len(REDUCED_SCANNET_CLASSES)
    assert s.instances == [InstanceInfo(4, 5, "chair_4")]
    assert 5 in s.thing_classes and 1 in s.stuff_classes
    sem, inst = panoptic_ground_truth(s)
    assert panoptic_quality_scene(sem, inst, sem, inst, s.thing_classes, s.stuff_classes)["pq"] == pytest.approx(1.0)
    assert [v.stem for v in read_panoptic_lifting(tmp_path, split="all").views] == ["0", "5", "15"]


def test_panoptic_lifting_transforms_json_and_resize(tmp_path: Path) -> None:
    info = _panlift_folder(tmp_path, use_transforms=True)
    s = read_panoptic_lifting(tmp_path, split="train", size=(8, 6))
    assert [v.stem for v in s.views] == ["0", "10", "15"] and s.meta["skipped"] == []
    v = s.views[1]
    np.testing.assert_allclose(v.cam_to_world, info["poses"]["10"], atol=1e-12)
    np.testing.assert_allclose(v.K, np.diag([0.5, 0.5, 1.0]) @ info["K"])
    assert v.image.shape == (6, 8, 3) and v.semantic.shape == (6, 8) and v.semantic.dtype == np.uint16


def test_panoptic_lifting_missing_parts(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no color"):
        read_panoptic_lifting(tmp_path)
    _panlift_folder(tmp_path)
    (tmp_path / "splits.json").unlink()
    with pytest.raises(DatasetError, match="splits.json"):
        read_panoptic_lifting(tmp_path, split="test")
