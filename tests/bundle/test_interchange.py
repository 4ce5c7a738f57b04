"""COLMAP and nerfstudio exports, read back by independent readers: pycolmap, and nerfstudio's documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from panst3r_engine.bundle.convert import export_bundle, scene_from_bundle
from panst3r_engine.bundle.interchange import rotation_to_quaternion, write_colmap, write_nerfstudio
from panst3r_engine.bundle.read import Bundle, read_bundle
from panst3r_engine.bundle.spec import decode_panoptic
from panst3r_engine.bundle.write import write_bundle
from tests.bundle_utils import make_consistent_bundle_inputs

# nerfstudio's transforms.json (docs.nerf.studio, "Data conventions"): per-camera keys go at the top level when
# shared by every frame, else in every frame (its dataparser asserts so)
INTRINSICS = {"fl_x": float, "fl_y": float, "cx": float, "cy": float, "w": int, "h": int}
CAMERA_MODELS = {"OPENCV", "OPENCV_FISHEYE", "EQUIRECTANGULAR", "PINHOLE", "SIMPLE_PINHOLE"}


def _bundle(tmp_path: Path, invalid_views: tuple[int, ...] = (), same_K: bool = False) -> Bundle:
    manifest, points, panoptic, photos = make_consistent_bundle_inputs(invalid_views=invalid_views)
    if same_K:  # views 0 and 1 are 32x24: give them one K; the portrait view 2 keeps its own
        manifest["cameras"][1]["K"] = manifest["cameras"][0]["K"]
        manifest, points, panoptic, photos = _reproject(manifest, points, panoptic, photos)
    return read_bundle(write_bundle(tmp_path / "bundle", manifest, points, panoptic, photos))


def _reproject(manifest, points, panoptic, photos):
    """Points moved back onto their pixels' rays after a K was changed."""
    cams = {c["image"]: c for c in manifest["cameras"]}
    xyz = points["xyz"].astype(np.float64)
    for view, cam in cams.items():
        rows = points["view"] == view
        pose = np.asarray(cam["cam_to_world"])
        depth = ((xyz[rows] - pose[:3, 3]) @ pose[:3, :3])[:, 2:3]
        pix = np.concatenate([points["pixel"][rows] + 0.5, np.ones((rows.sum(), 1))], 1)
        xyz[rows] = (pix @ np.linalg.inv(np.asarray(cam["K"])).T * depth) @ pose[:3, :3].T + pose[:3, 3]
    return manifest, dict(points, xyz=xyz.astype(np.float32)), panoptic, photos


# ---------------------------------------------------------------- COLMAP, read by pycolmap
def test_colmap_model_reads_back_in_pycolmap(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    result = write_colmap(scene_from_bundle(bundle), tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    points = bundle.points
    assert result.warnings == [] and model.num_reg_images() == 3 and model.num_points3D() == len(points["xyz"])
    by_name = {image.name: image for image in model.images.values()}
    for entry, cam in zip(bundle.manifest["images"], bundle.manifest["cameras"]):
        image = by_name[f"{entry['stem']}.jpg"]
        camera = model.cameras[image.camera_id]
        assert camera.model_name == "PINHOLE" and [camera.width, camera.height] == entry["processed_size"]
        np.testing.assert_allclose(camera.calibration_matrix(), cam["K"], atol=1e-12)
        world_from_cam = np.vstack([image.cam_from_world().inverse().matrix(), [0, 0, 0, 1]])
        np.testing.assert_allclose(world_from_cam, cam["cam_to_world"], atol=1e-9)
        assert (tmp_path / "colmap" / "images" / image.name).read_bytes() == (
            bundle.path / "images" / image.name
        ).read_bytes()
    for point_id, point in model.points3D.items():
        row = point_id - 1
        np.testing.assert_allclose(point.xyz, points["xyz"][row], rtol=1e-6)
        assert point.color.tolist() == points["rgb"][row].tolist()
        (element,) = point.track.elements
        image = model.images[element.image_id]
        assert image.name == f"{bundle.stems[points['view'][row]]}.jpg"
        observed = image.points2D[element.point2D_idx]
        assert observed.point3D_id == point_id
        # COLMAP's pixel centres are at +0.5, as the bundle's K: the point projects onto its pixel's centre
        np.testing.assert_allclose(observed.xy, points["pixel"][row] + 0.5)
        projected = image.camera.img_from_cam(image.cam_from_world() * point.xyz)
        np.testing.assert_allclose(projected, observed.xy, atol=2e-3)
        assert 0 <= point.error < 2e-3


def test_colmap_shares_a_camera_between_identical_intrinsics(tmp_path: Path) -> None:
    write_colmap(scene_from_bundle(_bundle(tmp_path, same_K=True)), tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    cameras = {image.name: image.camera_id for image in model.images.values()}
    assert len(model.cameras) == 2 and cameras["IMG_0001.jpg"] == cameras["IMG_0002.jpg"] != cameras["portrait.jpg"]


def test_colmap_leaves_out_an_unrecovered_camera(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, invalid_views=(1,))
    result = write_colmap(scene_from_bundle(bundle), tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    assert sorted(image.name for image in model.images.values()) == ["IMG_0001.jpg", "portrait.jpg"]
    assert len(result.warnings) == 1 and "IMG_0002" in result.warnings[0]
    untracked = [pid - 1 for pid, point in model.points3D.items() if point.track.length() == 0]
    assert sorted(untracked) == np.flatnonzero(bundle.points["view"] == 1).tolist()  # kept, without a track
    assert not (tmp_path / "colmap" / "images" / "IMG_0002.jpg").exists()


def test_quaternions_match_pycolmap_including_half_turns() -> None:
    rng = np.random.default_rng(3)
    rotations = [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0]), np.eye(3)]
    for _ in range(20):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        q[:, 2] *= np.linalg.det(q)
        rotations.append(q)
    for rotation in rotations:
        w, x, y, z = rotation_to_quaternion(rotation)
        assert w >= 0 and np.isclose(w * w + x * x + y * y + z * z, 1.0)
        np.testing.assert_allclose(pycolmap.Rotation3d(np.array([x, y, z, w])).matrix(), rotation, atol=1e-12)


# ---------------------------------------------------------------- nerfstudio, checked against its schema
def check_transforms_schema(doc: dict, folder: Path) -> None:
    """transforms.json as nerfstudio's dataparser reads it (docs.nerf.studio, Data conventions)."""
    assert doc["camera_model"] in CAMERA_MODELS
    assert isinstance(doc["frames"], list) and doc["frames"]
    for key, kind in INTRINSICS.items():
        if key in doc:
            assert isinstance(doc[key], kind)
        else:
            assert all(isinstance(frame[key], kind) for frame in doc["frames"]), key
    for frame in doc["frames"]:
        assert (folder / frame["file_path"]).is_file()
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        assert matrix.shape == (4, 4) and matrix[3].tolist() == [0, 0, 0, 1]
        assert "mask_path" not in frame  # nerfstudio's masks mark pixels to ignore: panoptic maps are not that
    assert (folder / doc["ply_file_path"]).is_file()


def _nerfstudio_pixel(doc: dict, frame: dict, xyz: np.ndarray) -> np.ndarray:
    """Where nerfstudio sees world points: camera axes x right, y up, z back; a ray through pixel (u, v)
    has direction ((u - cx) / fx, -(v - cy) / fy, -1) (nerfstudio Cameras.generate_rays)."""
    get = lambda key: frame.get(key, doc.get(key))  # noqa: E731 - per-frame value, else the shared one
    c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    cam = (xyz - c2w[:3, 3]) @ c2w[:3, :3]
    u = get("cx") + get("fl_x") * cam[:, 0] / -cam[:, 2]
    v = get("cy") - get("fl_y") * cam[:, 1] / -cam[:, 2]
    return np.stack([u, v], axis=1)


def test_nerfstudio_dataset_follows_the_schema_and_reprojects(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    result = write_nerfstudio(scene_from_bundle(bundle), tmp_path / "ns")
    doc = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    check_transforms_schema(doc, tmp_path / "ns")
    assert result.views == 3 and doc["camera_model"] == "OPENCV" and "fl_x" not in doc  # intrinsics differ
    points = bundle.points
    for frame, entry in zip(doc["frames"], bundle.manifest["images"]):
        stem = entry["stem"]
        assert frame["file_path"] == f"images/{stem}.jpg" and [frame["w"], frame["h"]] == entry["processed_size"]
        rows = points["view"] == entry["index"]
        uv = _nerfstudio_pixel(doc, frame, points["xyz"][rows].astype(np.float64))
        np.testing.assert_allclose(uv, points["pixel"][rows] + 0.5, atol=2e-3)
        ids = decode_panoptic(np.asarray(Image.open(tmp_path / "ns" / frame["panoptic_path"])))
        np.testing.assert_array_equal(ids, bundle.panoptic(stem))
    classes = {c["id"]: c["name"] for c in doc["panst3r"]["classes"]}
    assert classes == {c["id"]: c["name"] for c in bundle.manifest["classes"]}
    assert {s["id"]: s["class_id"] for s in doc["panst3r"]["segments"]} == {
        s["id"]: s["class_id"] for s in bundle.manifest["segments"]
    }
    cloud = pycolmap.Reconstruction()
    cloud.import_PLY(str(tmp_path / "ns" / doc["ply_file_path"]))  # an independent PLY reader
    xyz = np.array([p.xyz for p in cloud.points3D.values()])
    rgb = np.array([p.color for p in cloud.points3D.values()])
    order = np.lexsort(xyz.T[::-1])
    expected = np.lexsort(points["xyz"].T[::-1])
    np.testing.assert_allclose(xyz[order], points["xyz"][expected], rtol=1e-6)
    np.testing.assert_array_equal(rgb[order], points["rgb"][expected])


def test_nerfstudio_shares_intrinsics_at_the_top_and_skips_unrecovered_cameras(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, invalid_views=(2,), same_K=True)
    result = write_nerfstudio(scene_from_bundle(bundle), tmp_path / "ns")
    doc = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    check_transforms_schema(doc, tmp_path / "ns")
    assert [f["file_path"] for f in doc["frames"]] == ["images/IMG_0001.jpg", "images/IMG_0002.jpg"]
    assert (doc["w"], doc["h"], doc["fl_x"]) == (32, 24, 30.0) and "fl_x" not in doc["frames"][0]
    assert "portrait" in result.warnings[0]


def test_no_usable_camera_is_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, invalid_views=(0, 1, 2))
    from panst3r_engine.bundle.checks import BundleError

    with pytest.raises(BundleError, match="nothing to train on"):
        export_bundle(bundle.path, "colmap", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no output, no staging folder


def test_a_bundle_without_points_still_exports(tmp_path: Path) -> None:
    manifest, points, panoptic, photos = make_consistent_bundle_inputs()
    points = {name: array[:0] for name, array in points.items()}  # a threshold that kept no point
    bundle = read_bundle(write_bundle(tmp_path / "bundle", manifest, points, panoptic, photos))
    write_colmap(scene_from_bundle(bundle), tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    assert model.num_reg_images() == 3 and model.num_points3D() == 0
    write_nerfstudio(scene_from_bundle(bundle), tmp_path / "ns")
    check_transforms_schema(json.loads((tmp_path / "ns" / "transforms.json").read_text()), tmp_path / "ns")
