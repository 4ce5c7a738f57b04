"""One Blender camera per photo: intrinsics and pose from the bundle, the photo as background."""

from __future__ import annotations

import bpy
from mathutils import Matrix

from ..bundle.read import CameraInfo
from .convert import WorldTransform, camera_intrinsics


def _background(data: bpy.types.Camera, cam: CameraInfo) -> None:
    """Show the processed photo behind the camera view (it has the camera's exact aspect)."""
    if cam.photo is None:
        return
    image = bpy.data.images.load(str(cam.photo), check_existing=True)
    background = data.background_images.new()
    background.image = image
    background.frame_method = "FIT"
    background.alpha = 1.0
    data.show_background_images = True


def create_camera(
    cam: CameraInfo, transform: WorldTransform, collection: bpy.types.Collection, display_size: float
) -> bpy.types.Object:
    """A camera object named ``Camera.<stem>`` matching the bundle camera of one image."""
    name = f"Camera.{cam.stem}"
    data = bpy.data.cameras.new(name)
    intrinsics = camera_intrinsics(cam.K, cam.width, cam.height)
    data.sensor_fit = intrinsics.sensor_fit
    data.sensor_width, data.sensor_height = intrinsics.sensor_width, intrinsics.sensor_height
    data.lens = intrinsics.lens
    data.shift_x, data.shift_y = intrinsics.shift_x, intrinsics.shift_y
    data.clip_start = max(1e-3, 0.01 * transform.scale)
    data.clip_end = 1000.0 * transform.scale
    data.display_size = display_size
    _background(data, cam)
    ob = bpy.data.objects.new(name, data)
    ob.matrix_world = Matrix(transform.camera_matrix(cam.cam_to_world).tolist())
    ob["image"] = cam.image
    ob["stem"] = cam.stem
    ob["resolution"] = [cam.width, cam.height]
    collection.objects.link(ob)
    return ob


def use_camera(scene: bpy.types.Scene, ob: bpy.types.Object) -> None:
    """Make ob the scene camera and set the render resolution to its photo's size."""
    scene.camera = ob
    resolution = ob.get("resolution")
    if resolution is not None and len(resolution) == 2:
        scene.render.resolution_x, scene.render.resolution_y = int(resolution[0]), int(resolution[1])
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
