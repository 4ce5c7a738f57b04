"""Camera conventions between OpenCV (the engine) and Blender, in one place (no bpy).

- Axes: OpenCV cameras are x right, y down, z forward; Blender cameras are
  x right, y up, z backward, so camera-to-world matrices differ by a flip of
  the camera's y and z axes (``CV_TO_BLENDER``).
- Pixels: the engine puts pixel (col, row) at coordinate (col, row) with the
  principal point at (W/2, H/2). Cycles samples pixel i at continuous i + 0.5,
  so a Blender camera needs a half-pixel lens shift for K to read (W/2, H/2).
  Checked against ``bpy_extras.object_utils.world_to_camera_view`` in the tests.
"""

from __future__ import annotations

import numpy as np


def look_at(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world ``[4, 4]`` at ``eye`` looking at ``target`` (image y down = -up)."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


#: OpenCV camera axes <-> Blender camera axes (x right, y up, z backward): flip y and z.
CV_TO_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_to_blender(c2w: np.ndarray) -> np.ndarray:
    """Blender camera ``matrix_world`` for an OpenCV camera-to-world (same world)."""
    return np.asarray(c2w, np.float64) @ CV_TO_BLENDER


def blender_to_opencv(matrix_world: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world from a Blender camera ``matrix_world`` (scale removed)."""
    m = np.asarray(matrix_world, np.float64).copy()
    m[:3, :3] /= np.linalg.norm(m[:3, :3], axis=0, keepdims=True)
    return m @ CV_TO_BLENDER


def pixel_centre_shift(width: int, height: int) -> tuple[float, float]:
    """Blender ``(shift_x, shift_y)`` that puts the principal point at (W/2, H/2) in index coordinates.

    Cycles samples pixel ``i`` at continuous coordinate ``i + 0.5`` and an
    unshifted camera's axis crosses the continuous centre W/2, i.e. index
    W/2 - 0.5. Shifts are in units of the larger image side; a negative
    shift_x moves the content right, a positive shift_y moves it down.
    """
    m = float(max(width, height))
    return -0.5 / m, 0.5 / m


def blender_intrinsics(
    lens_mm: float, sensor_mm: float, width: int, height: int, shift_x: float = 0.0, shift_y: float = 0.0
) -> np.ndarray:
    """K ``[3, 3]`` in index pixel coordinates for a Blender camera with horizontal sensor fit."""
    f = lens_mm / sensor_mm * width
    m = float(max(width, height))
    k = np.eye(3)
    k[0, 0] = k[1, 1] = f
    k[0, 2] = width / 2.0 - shift_x * m - 0.5
    k[1, 2] = height / 2.0 + shift_y * m - 0.5
    return k
