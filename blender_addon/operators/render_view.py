"""``panst3r.render_view_engine``: the scene camera's view of a result's Gaussian splats, rendered by the engine.

read (scene camera, result collection) -> check (perspective camera, a result made by an engine job,
the engine it came from) -> convert (Blender camera -> OpenCV K and cam_to_world in the bundle's
world, undoing the import transform) -> ``POST /v1/jobs/{id}/render`` -> two images, "PanSt3R RGB" and
"PanSt3R Labels" (segment colours of the manifest), packed into the .blend and shown in the Image
Editors the screen has. The request blocks until the engine answers (a GPU renders in well under a
second; a CPU engine takes seconds at full resolution).
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty

from .. import runtime

RGB_IMAGE = "PanSt3R RGB"
LABELS_IMAGE = "PanSt3R Labels"
VOID_COLOR = (0, 0, 0)
UNKNOWN_COLOR = (150, 150, 150)


class RenderViewError(RuntimeError):
    """A reason the view cannot be rendered, as a sentence."""


# ---------------------------------------------------------------- read and check
def find_result(context, name: str = "") -> bpy.types.Collection:
    """The result collection to render: named, else the one holding the scene camera or the active object,
    else the only one made by an engine job, else the only one."""
    from ..importers import result_collections

    results = result_collections(context.scene)
    if name:
        found = next((c for c in results if c.name == name), None)
        if found is None:
            raise RenderViewError(f"the scene has no imported PanSt3R result named {name!r}")
        return found
    if not results:
        raise RenderViewError("the scene has no imported PanSt3R result; run PanSt3R with Gaussian Splats on")
    for ob in (context.scene.camera, context.view_layer.objects.active):
        holding = [c for c in results if ob is not None and ob.name in c.all_objects]
        if holding:
            return holding[0]
    from_jobs = [c for c in results if c.get("job_id")]
    if len(from_jobs) == 1 or len(results) == 1:
        return (from_jobs or results)[0]
    raise RenderViewError(
        f"the scene has {len(results)} PanSt3R results; make an object of the one to render "
        "active (or one of its cameras the scene camera)"
    )


def render_size(scene) -> tuple[int, int, float]:
    """(width, height) in pixels of the scene's render and its pixel aspect (y / x)."""
    render = scene.render
    width = max(1, round(render.resolution_x * render.resolution_percentage / 100))
    height = max(1, round(render.resolution_y * render.resolution_percentage / 100))
    return width, height, render.pixel_aspect_y / render.pixel_aspect_x


def camera_request(scene, camera: bpy.types.Object, result: bpy.types.Collection) -> tuple:
    """(K [3, 3], cam_to_world [4, 4] in the bundle's world, OpenCV axes, width, height) of a Blender camera."""
    from ..importers.convert import CameraIntrinsics, WorldTransform, intrinsics_to_K

    data = camera.data
    if data.type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(data.type, data.type.lower())
        raise RenderViewError(f"the camera {camera.name!r} is {kind}; the engine renders only perspective cameras")
    if "world_matrix" not in result or "scale" not in result:
        raise RenderViewError(f"the result {result.name!r} has no stored import transform; import it again")
    transform = WorldTransform.from_matrix(list(result["world_matrix"]), float(result["scale"]))
    width, height, aspect = render_size(scene)
    intrinsics = CameraIntrinsics(
        data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, data.shift_x, data.shift_y
    )
    K = intrinsics_to_K(intrinsics, width, height, aspect)
    return K, transform.camera_to_opencv(np.array(camera.matrix_world)), width, height


def _client(context, result: bpy.types.Collection):
    """The client of the engine that ran the result's job."""
    from ..client.engine import EngineClient, is_local_url
    from ..preferences import get_preferences

    prefs, origin = get_preferences(context), str(result.get("engine", "local"))
    if origin == "local":
        if prefs.engine_mode == "REMOTE":
            raise RenderViewError(
                "this result was made by the local engine, but the preferences use a remote "
                "one; switch the engine back to Local to render it"
            )
        engine = runtime.host.engine
        if engine is None or not engine.alive():
            raise RenderViewError(
                "the local PanSt3R engine is not running; start it (Start Engine in the add-on "
                "preferences, or run a job) and try again"
            )
        return engine.client
    if prefs.engine_mode != "REMOTE" or prefs.remote_url.strip().rstrip("/") != origin.rstrip("/"):
        raise RenderViewError(
            f"this result was made by the engine at {origin}; set it as the remote engine in "
            "the add-on preferences to render it"
        )
    if not bpy.app.online_access and not is_local_url(origin):
        raise RenderViewError(
            "online access is off, so the remote engine cannot be used; allow it in Preferences > System > Network"
        )
    return EngineClient(origin, prefs.remote_token.strip())


# ---------------------------------------------------------------- images
def segment_colors(bundle: str) -> dict[int, tuple[int, int, int]]:
    """Segment id -> sRGB colour from the bundle's manifest ({} when it cannot be read)."""
    try:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
        return {int(s["id"]): tuple(int(c) for c in s["color"][:3]) for s in manifest.get("segments", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def decode_labels(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, >=3] COCO-panoptic PNG pixels -> int64 [H, W] ids (R + 256 G + 65536 B)."""
    rgb = pixels[..., :3].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def color_labels(ids: np.ndarray, colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """int [H, W] segment ids -> uint8 [H, W, 3] in the segments' colours (void black, unknown grey)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    palette = np.array([VOID_COLOR if i == 0 else colors.get(int(i), UNKNOWN_COLOR) for i in uniq], np.uint8)
    return palette.reshape(-1, 3)[inverse.ravel()].reshape(*ids.shape, 3)


def check_png(data: bytes, width: int, height: int) -> None:
    """Refuse PNG bytes from the engine that are not ``width`` x ``height`` 8-bit pixels or that would inflate to
    more than such an image holds (a zlib bomb), before anything is decoded or allocated."""
    from ..bundle.png import _CHANNELS, _SIGNATURE, PngError, _chunks

    try:
        if not data.startswith(_SIGNATURE):
            raise PngError("not a PNG")
        chunks = list(_chunks(data, "the image"))
        if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
            raise PngError("no IHDR chunk first")
        w, h, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    except (PngError, struct.error) as exc:
        raise RenderViewError(f"the engine sent an unreadable image ({exc}); update the engine") from None
    if (w, h) != (width, height) or depth != 8 or colour not in _CHANNELS:
        raise RenderViewError(
            f"the engine sent a {w}x{h} image (bit depth {depth}) for a {width}x{height} view; update the engine"
        )
    expected = height * (1 + width * _CHANNELS[colour])
    inflater = zlib.decompressobj()
    size = 0
    try:
        for kind, payload in chunks:
            if kind == b"IDAT":
                size += len(inflater.decompress(payload, expected + 1 - size))
                if size > expected or inflater.unconsumed_tail:
                    raise RenderViewError(
                        f"the engine sent an image holding more data than a {width}x{height} view; update the engine"
                    )
    except zlib.error as exc:
        raise RenderViewError(f"the engine sent an unreadable image ({exc}); update the engine") from None


def decode_png(data: bytes, width: int | None = None, height: int | None = None) -> np.ndarray:
    """uint8 [H, W, C] pixels of PNG bytes (the add-on's own decoder: no Pillow in Blender); with ``width`` and
    ``height``, the header and the inflated size are checked first (:func:`check_png`)."""
    from ..bundle.png import PngError, read_png

    if width is not None and height is not None:
        check_png(data, width, height)
    with tempfile.TemporaryDirectory(prefix="panst3r-render-") as folder:
        path = Path(folder) / "view.png"
        path.write_bytes(data)
        try:
            return read_png(path)
        except PngError as exc:
            raise RenderViewError(f"the engine sent an unreadable image ({exc})") from None


def store_image(name: str, rgb: np.ndarray) -> bpy.types.Image:
    """The byte image ``name`` (created or resized) holding uint8 [H, W, 3] sRGB pixels, packed into the .blend."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=True)
    elif tuple(image.size) != (width, height):
        image.scale(width, height)
    rgba = np.empty((height, width, 4), np.float32)
    rgba[..., :3], rgba[..., 3] = rgb[::-1] / np.float32(255.0), 1.0  # Blender rows go bottom-up
    image.pixels.foreach_set(rgba.ravel())
    image.pack()
    image.update()
    return image


def show_images(context, images: list[bpy.types.Image]) -> int:
    """Show the images in the screen's Image Editors (first RGB, then labels); returns how many were shown."""
    areas = [
        area
        for window in getattr(context.window_manager, "windows", [])
        for area in window.screen.areas
        if area.type == "IMAGE_EDITOR"
    ]
    for area, image in zip(areas, images):
        area.spaces.active.image = image
        area.tag_redraw()
    return min(len(areas), len(images))


class PANST3R_OT_render_view_engine(bpy.types.Operator):
    """Render the scene camera's view of the result's Gaussian splats with the engine: RGB and segment labels"""

    bl_idname = "panst3r.render_view_engine"
    bl_label = "Render This View with the Engine"
    bl_options = {"REGISTER"}

    result: StringProperty(
        name="Result",
        options={"SKIP_SAVE"},
        description="The imported result collection to render; empty = the one holding the "
        "scene camera or the active object, or the only one",
    )

    def execute(self, context):
        from ..client.engine import EngineError

        camera = context.scene.camera
        try:
            if camera is None or camera.type != "CAMERA":
                raise RenderViewError(
                    "the scene has no active camera; add one, or make one active with "
                    "View > Cameras > Set Active Object as Camera"
                )
            result = find_result(context, self.result)
            job_id = str(result.get("job_id", ""))
            if not job_id:
                raise RenderViewError(
                    f"the result {result.name!r} was imported from a folder, so no engine job "
                    "is known for it; run PanSt3R with Gaussian Splats on to render new views"
                )
            K, cam_to_world, width, height = camera_request(context.scene, camera, result)
            reply = _client(context, result).render_view(job_id, K, cam_to_world, width, height)
            rgb = decode_png(reply["rgb_png"], width, height)[..., :3]
            labels = color_labels(
                decode_labels(decode_png(reply["labels_png"], width, height)),
                segment_colors(str(result.get("bundle", ""))),
            )
        except (RenderViewError, EngineError) as exc:
            self.report({"ERROR"}, f"Cannot render this view: {exc}")
            return {"CANCELLED"}
        images = [store_image(RGB_IMAGE, rgb), store_image(LABELS_IMAGE, labels)]
        for image in images:
            image["job_id"], image["camera"] = job_id, camera.name
        shown = show_images(context, images)
        where = "shown in the Image Editor" if shown else "open them in an Image Editor"
        self.report(
            {"INFO"}, f"Rendered {width}x{height} from {camera.name} into '{RGB_IMAGE}' and '{LABELS_IMAGE}' ({where})"
        )
        return {"FINISHED"}


classes = (PANST3R_OT_render_view_engine,)
