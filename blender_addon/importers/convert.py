"""The one place where engine coordinates become Blender coordinates (batch numpy, no bpy).

Engine (README, "Result bundle"): OpenCV axes (camera x right, y down, z forward), world =
the reference camera's frame, network units. Blender: Z up; a camera looks
down its local -Z with +Y up. The import:

1. rotates the world so the reference camera looks horizontally along +Y with
   up +Z (``reference_rotation``);
2. optionally levels the scene on floor-like points: a plane fit, rotated to
   horizontal, with the floor at z = 0 (``level_rotation``; steps 1-2 live in the
   shared ``bundle/_layout.py``, so the engine's layout export uses the same frame);
3. multiplies by a user scale.

All of it is one :class:`WorldTransform` applied to points and camera poses.
Intrinsics map to Blender's lens/sensor/shift in :func:`camera_intrinsics`.
The principal point uses the continuous convention: the image centre is (W/2, H/2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bundle._layout import (  # noqa: F401 - the levelling facts live with the layout proxies; names kept here
    FLOOR_CLASSES,
    MAX_LEVEL_ANGLE,
    MIN_FLOOR_POINTS,
    level_frame,
    level_rotation,
    reference_rotation,
    rotation_between,
)

CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes -> Blender camera axes (180° about X)
SENSOR_SIZE = 36.0  # mm along the larger image side


@dataclass(frozen=True)
class WorldTransform:
    """Blender world = scale * rotation @ engine world + offset."""

    rotation: np.ndarray  # [3, 3]
    scale: float = 1.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # [3] Blender units

    def matrix(self) -> np.ndarray:
        """[4, 4] engine world -> Blender world."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.offset
        return out

    def points(self, xyz: np.ndarray) -> np.ndarray:
        """float32 [N, 3] engine world -> float32 [N, 3] Blender world (C-contiguous)."""
        linear = (self.scale * self.rotation).astype(np.float32)
        out = np.asarray(xyz, dtype=np.float32) @ linear.T
        out += self.offset.astype(np.float32)
        return np.ascontiguousarray(out)

    def camera_matrix(self, cam_to_world: np.ndarray) -> np.ndarray:
        """[4, 4] OpenCV camera-to-world -> Blender camera ``matrix_world`` (rotation only, unit scale)."""
        cam_to_world = np.asarray(cam_to_world, dtype=np.float64)
        out = np.eye(4)
        out[:3, :3] = self.rotation @ cam_to_world[:3, :3] @ CV_TO_BLENDER_CAMERA
        out[:3, 3] = self.scale * self.rotation @ cam_to_world[:3, 3] + self.offset
        return out

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | list, scale: float) -> WorldTransform:
        """The transform stored on a result collection (:meth:`matrix`, row-major, and its scale)."""
        matrix = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
        return cls(matrix[:3, :3] / scale, float(scale), matrix[:3, 3].copy())

    def quaternions(self, quats: np.ndarray) -> np.ndarray:
        """float [N, 4] (w, x, y, z) engine-world orientations -> float32 [N, 4] Blender-world ones."""
        return quaternion_multiply(matrix_to_quaternion(self.rotation), quats).astype(np.float32)

    def camera_to_opencv(self, matrix_world: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`camera_matrix`: Blender camera matrix -> OpenCV camera-to-world."""
        matrix_world = np.asarray(matrix_world, dtype=np.float64)
        out = np.eye(4)
        rot = matrix_world[:3, :3] / np.linalg.norm(matrix_world[:3, :3], axis=0)  # drop any object scale
        out[:3, :3] = self.rotation.T @ rot @ CV_TO_BLENDER_CAMERA
        out[:3, 3] = self.rotation.T @ (matrix_world[:3, 3] - self.offset) / self.scale
        return out


def world_transform(
    ref_cam_to_world: np.ndarray, floor_xyz: np.ndarray | None = None, scale: float = 1.0
) -> tuple[WorldTransform, str]:
    """The import's transform: reference camera upright, optionally levelled (floor at z = 0), scaled.

    The upright and levelled frame is the layout proxies' (``bundle/_layout.py``, shared with the engine).

    Args:
        ref_cam_to_world: [4, 4] the reference camera's pose (identity when world = its frame).
        floor_xyz: float [F, 3] engine-world points of floor-like classes, or None not to level.
        scale: multiplies every distance.
    Returns:
        (transform, warning sentence or "").
    """
    if not scale > 0:
        raise ValueError(f"the scale must be positive, got {scale}")
    frame = level_frame(ref_cam_to_world, floor_xyz)
    offset = np.array([0.0, 0.0, -scale * frame.floor_height])
    return WorldTransform(frame.rotation, float(scale), offset), frame.warning


@dataclass(frozen=True)
class CameraIntrinsics:
    """Blender camera data settings (lens and sensor in mm, shifts in units of the larger image side)."""

    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str  # 'HORIZONTAL' | 'VERTICAL'
    shift_x: float
    shift_y: float


def camera_intrinsics(K: np.ndarray, width: int, height: int, sensor: float = SENSOR_SIZE) -> CameraIntrinsics:
    """OpenCV K (pixels of a W x H image) -> Blender lens/sensor/shift; the sensor fits the larger side."""
    K = np.asarray(K, dtype=np.float64)
    horizontal = width >= height
    side = width if horizontal else height
    focal = K[0, 0] if horizontal else K[1, 1]
    return CameraIntrinsics(
        lens=float(focal * sensor / side),
        sensor_width=sensor,
        sensor_height=sensor,
        sensor_fit="HORIZONTAL" if horizontal else "VERTICAL",
        shift_x=float((width / 2.0 - K[0, 2]) / side),
        shift_y=float((K[1, 2] - height / 2.0) / side),
    )


def intrinsics_to_K(intr: CameraIntrinsics, width: int, height: int, pixel_aspect: float = 1.0) -> np.ndarray:
    """Inverse of :func:`camera_intrinsics`: [3, 3] K of a W x H render, as Blender projects it.

    Follows Blender's view plane: 'AUTO' fits the sensor width to the larger side (of the image in
    pixel-aspect-corrected units), shifts are in units of the fitted side, and ``pixel_aspect`` is
    ``pixel_aspect_y / pixel_aspect_x`` (1 for square pixels; fy = fx / pixel_aspect).
    """
    fit = intr.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width >= pixel_aspect * height else "VERTICAL"
        sensor = intr.sensor_width
    else:
        sensor = intr.sensor_width if fit == "HORIZONTAL" else intr.sensor_height
    side = width if fit == "HORIZONTAL" else pixel_aspect * height  # in x-pixels
    fx = intr.lens * side / sensor
    return np.array(
        [
            [fx, 0.0, width / 2.0 - intr.shift_x * side],
            [0.0, fx / pixel_aspect, height / 2.0 + intr.shift_y * side / pixel_aspect],
            [0.0, 0.0, 1.0],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [4] unit quaternion (w, x, y, z), w >= 0 (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = np.zeros(4)
        q[0], q[1 + i] = (m[k, j] - m[j, k]) / s, 0.25 * s
        q[1 + j], q[1 + k] = (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions, broadcast over leading axes: float64 [..., 4]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quaternion_to_matrix(quats: np.ndarray) -> np.ndarray:
    """Unit (w, x, y, z) quaternions [..., 4] -> rotation matrices float64 [..., 3, 3]."""
    w, x, y, z = np.moveaxis(np.asarray(quats, dtype=np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _srgb_lut() -> np.ndarray:
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


SRGB_TO_LINEAR = _srgb_lut()  # [256] float32


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """float sRGB values (0-1, any shape) -> float32 scene-linear values (the sRGB transfer curve)."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_rgba(rgb: np.ndarray) -> np.ndarray:
    """uint8 [N, 3] sRGB -> float32 [N, 4] scene-linear RGBA (alpha 1), C-contiguous."""
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    out = np.ones((len(rgb), 4), dtype=np.float32)
    out[:, :3] = SRGB_TO_LINEAR[rgb]
    return out


def linear_color(rgb: tuple[int, int, int] | list[int]) -> tuple[float, float, float, float]:
    """One sRGB 0..255 colour -> scene-linear RGBA floats (for materials and object colours)."""
    return (*(float(SRGB_TO_LINEAR[int(c)]) for c in rgb[:3]), 1.0)
