"""OpenCV -> Blender conversion (importers/convert.py is plain numpy: no bpy needed)."""

from __future__ import annotations

import numpy as np
import pytest

from blender_addon.importers import convert  # numpy only: importable without Blender


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    q[:, 2] *= np.linalg.det(q)
    return q


def _pose(rng: np.random.Generator) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = _random_rotation(rng), rng.normal(size=3)
    return pose


def test_reference_camera_looks_along_plus_y_with_up_plus_z() -> None:
    rng = np.random.default_rng(0)
    for ref in (np.eye(4), _pose(rng)):
        transform, _ = convert.world_transform(ref)
        cam = transform.camera_matrix(ref)
        np.testing.assert_allclose(cam[:3, :3] @ [0, 0, -1], [0, 1, 0], atol=1e-12)  # Blender cameras look down -Z
        np.testing.assert_allclose(cam[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # and have +Y up


def test_camera_pose_round_trip_with_scale_and_offset() -> None:
    rng = np.random.default_rng(1)
    transform = convert.WorldTransform(_random_rotation(rng), 2.5, rng.normal(size=3))
    for _ in range(5):
        pose = _pose(rng)
        cam = transform.camera_matrix(pose)
        np.testing.assert_allclose(np.linalg.det(cam[:3, :3]), 1.0, atol=1e-12)
        np.testing.assert_allclose(transform.camera_to_opencv(cam), pose, atol=1e-12)


def test_points_and_cameras_agree_on_projection() -> None:
    """A point projects to the same pixel through OpenCV (K, pose) and through the converted Blender camera."""
    rng = np.random.default_rng(2)
    width, height = 64, 48
    K = np.array([[50.0, 0, 30.0], [0, 50.0, 26.0], [0, 0, 1]])
    pose = _pose(rng)
    cam_pts = np.column_stack([rng.uniform(-1, 1, (20, 2)), rng.uniform(2, 5, 20)])
    world = cam_pts @ pose[:3, :3].T + pose[:3, 3]
    pix_cv = (cam_pts @ K.T)[:, :2] / cam_pts[:, 2:]
    transform, _ = convert.world_transform(_pose(rng), scale=3.0)
    cam = transform.camera_matrix(pose)
    local = (transform.points(world.astype(np.float32)) - cam[:3, 3]) @ cam[:3, :3]  # Blender camera frame
    depth = -local[:, 2]
    intr = convert.camera_intrinsics(K, width, height)
    focal = intr.lens / intr.sensor_width * width  # horizontal fit
    centre = np.array([width / 2 - intr.shift_x * width, height / 2 + intr.shift_y * width])
    pix_bl = np.column_stack([centre[0] + focal * local[:, 0] / depth, centre[1] - focal * local[:, 1] / depth])
    np.testing.assert_allclose(pix_bl, pix_cv, atol=1e-3)  # float32 points


@pytest.mark.parametrize("width,height", [(64, 48), (48, 64), (50, 50)])
def test_intrinsics_round_trip(width: int, height: int) -> None:
    K = np.array([[41.5, 0, width / 2 + 3.25], [0, 41.5, height / 2 - 1.5], [0, 0, 1]])
    intr = convert.camera_intrinsics(K, width, height)
    assert intr.sensor_fit == ("HORIZONTAL" if width >= height else "VERTICAL")
    np.testing.assert_allclose(convert.intrinsics_to_K(intr, width, height), K, atol=1e-12)


def _plane(normal: np.ndarray, count: int, rng: np.random.Generator, height: float = 0.0) -> np.ndarray:
    normal = normal / np.linalg.norm(normal)
    u = np.cross(normal, [0.3, 0.2, 0.9])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    coeffs = rng.uniform(-2, 2, (count, 2))
    return coeffs[:, :1] * u + coeffs[:, 1:] * v + normal * height + rng.normal(0, 0.005, (count, 1)) * normal


def test_levelling_makes_a_tilted_floor_horizontal() -> None:
    rng = np.random.default_rng(3)
    normal = np.array([0.0, np.sin(np.radians(20)), np.cos(np.radians(20))])
    floor = _plane(normal, 400, rng, height=-1.3)
    floor[:20] += rng.uniform(0.5, 1.0, (20, 3))  # clutter on the floor
    level, warning = convert.level_rotation(floor)
    assert warning == "" and level is not None
    np.testing.assert_allclose(level @ normal, [0, 0, 1], atol=5e-3)


def test_levelling_refuses_steep_or_sparse_floors() -> None:
    rng = np.random.default_rng(4)
    steep = _plane(np.array([0.0, np.sin(np.radians(60)), np.cos(np.radians(60))]), 200, rng)
    assert convert.level_rotation(steep)[0] is None and "60°" in convert.level_rotation(steep)[1]
    assert convert.level_rotation(steep[:5])[0] is None


def test_world_transform_puts_the_floor_at_zero() -> None:
    rng = np.random.default_rng(5)
    ref = np.eye(4)
    pitch = np.radians(15)  # camera looking 15° down: in its frame the floor (y down) is tilted
    floor_cv = _plane(np.array([0.0, -np.cos(pitch), np.sin(pitch)]), 300, rng, height=-1.4)
    transform, warning = convert.world_transform(ref, floor_cv, scale=2.0)
    z = transform.points(floor_cv.astype(np.float32))[:, 2]
    assert warning == ""
    assert abs(np.median(z)) < 1e-3 and np.std(z) < 0.02


def test_rotation_between_handles_parallel_vectors() -> None:
    z = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(convert.rotation_between(z, z), np.eye(3))
    flip = convert.rotation_between(-z, z)
    np.testing.assert_allclose(flip @ -z, z, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(flip), 1.0)


def test_colours_are_converted_to_linear() -> None:
    rgba = convert.linear_rgba(np.array([[0, 128, 255]], np.uint8))
    np.testing.assert_allclose(rgba, [[0.0, 0.2158605, 1.0, 1.0]], atol=1e-6)
    assert rgba.dtype == np.float32 and rgba.flags.c_contiguous
    assert convert.linear_color((255, 0, 0)) == (1.0, 0.0, 0.0, 1.0)
