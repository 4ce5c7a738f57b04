"""``panst3r.render_view_engine`` in real Blender: camera conversion, errors, a real engine rendering a job's splats.

The real-engine test runs ``python -m panst3r_engine serve`` with a tiny random checkpoint (as test_run.py does),
submits 3 small photos with ``"splats": true, "splat_steps": 2`` from the panel's Run, lets the timer callback
import the result, then renders the reference camera's view at 64 x 48.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle.read import read_bundle
from tests.blender.test_run import _add_photos, _drive, _photos, tiny_checkpoint  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
SAVED_PREFS = (
    "engine_mode",
    "python_path",
    "weights",
    "weights_path",
    "device",
    "startup_timeout",
    "remote_url",
    "remote_token",
)


@pytest.fixture
def prefs(addon):
    """The add-on preferences, restored afterwards; the local engine is stopped after the test."""
    prefs = addon.preferences
    saved = {name: getattr(prefs, name) for name in SAVED_PREFS}
    yield prefs
    addon.module("runtime").host.stop()
    for name, value in saved.items():
        setattr(prefs, name, value)


def _import(bpy, bundle: Path, **options):
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), **options) == {"FINISHED"}
    return next(c for c in bpy.data.collections if c.get("panst3r_result"))


@pytest.mark.parametrize("bundle_name, scale", [("synthetic_bundle", 2.5), ("room_bundle", 0.5)])
def test_cameras_convert_back_to_the_bundle(addon, scene, request, bundle_name: str, scale: float) -> None:
    """Each imported camera, made the scene camera, gives back the bundle's K and cam_to_world (the room is
    levelled on its floor, so the import transform has an offset as well as a rotation and a scale)."""
    bpy, bundle = addon.bpy, request.getfixturevalue(bundle_name)
    data = read_bundle(bundle)
    root = _import(bpy, bundle, scale=scale)
    render_view, cameras = addon.module("operators.render_view"), addon.module("importers.cameras")
    for cam in data.cameras:
        ob = bpy.data.objects[f"Camera.{cam.stem}"]
        cameras.use_camera(scene, ob)
        K, cam_to_world, width, height = render_view.camera_request(scene, ob, root)
        assert (width, height) == (cam.width, cam.height)
        np.testing.assert_allclose(K, cam.K, atol=1e-4)
        np.testing.assert_allclose(cam_to_world, cam.cam_to_world, atol=1e-4)


@pytest.mark.parametrize(
    "fit, pixel_aspect, size",
    [
        ("AUTO", (1.0, 1.0), (40, 30)),
        ("AUTO", (1.0, 1.0), (30, 40)),
        ("HORIZONTAL", (1.0, 2.0), (40, 30)),
        ("VERTICAL", (3.0, 2.0), (40, 30)),
    ],
)
def test_K_agrees_with_blenders_projection(
    addon, scene, synthetic_bundle: Path, fit: str, pixel_aspect: tuple, size: tuple
) -> None:
    """Any perspective camera (shifted, any sensor fit, non-square pixels): pixels projected with the K and pose
    sent to the engine land where Blender's own camera projection puts them."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Euler, Vector

    bpy = addon.bpy
    root = _import(bpy, synthetic_bundle, scale=1.5)
    data = bpy.data.cameras.new("free")
    data.lens, data.sensor_fit, data.sensor_width, data.sensor_height = 28.0, fit, 32.0, 20.0
    data.shift_x, data.shift_y = 0.1, -0.05
    ob = bpy.data.objects.new("free", data)
    scene.collection.objects.link(ob)
    ob.location, ob.rotation_euler = Vector((0.3, -4.0, 1.0)), Euler((1.3, 0.1, 0.2))
    scene.camera = ob
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 200
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = pixel_aspect
    bpy.context.view_layer.update()
    K, cam_to_world, width, height = addon.module("operators.render_view").camera_request(scene, ob, root)
    assert (width, height) == (2 * size[0], 2 * size[1])
    transform = addon.module("importers.convert").WorldTransform.from_matrix(
        list(root["world_matrix"]), float(root["scale"])
    )
    rng = np.random.default_rng(0)
    local = np.column_stack([rng.uniform(-0.4, 0.4, (10, 2)), rng.uniform(1, 3, 10)])  # OpenCV camera frame
    world = local @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    expected = (local @ K.T)[:, :2] / local[:, 2:]
    for point, pixel in zip(transform.points(world.astype(np.float32)), expected):
        ndc = world_to_camera_view(scene, ob, Vector(point.tolist()))
        np.testing.assert_allclose([ndc.x * width, (1 - ndc.y) * height], pixel, atol=2e-3)


def test_clear_errors_without_an_engine(addon, scene, prefs, synthetic_bundle: Path) -> None:
    bpy = addon.bpy
    root = _import(bpy, synthetic_bundle)
    with pytest.raises(RuntimeError, match="was imported from a folder, so no engine job is known"):
        bpy.ops.panst3r.render_view_engine()
    root["job_id"], root["engine"] = "20260101-000000-abcdef", "local"
    prefs.engine_mode = "LOCAL"
    addon.module("runtime").host.stop()
    with pytest.raises(RuntimeError, match="the local PanSt3R engine is not running; start it"):
        bpy.ops.panst3r.render_view_engine()
    prefs.engine_mode, prefs.remote_url = "REMOTE", "http://127.0.0.1:9"
    with pytest.raises(RuntimeError, match="made by the local engine, but the preferences use a remote one"):
        bpy.ops.panst3r.render_view_engine()
    root["engine"] = "http://127.0.0.1:9"
    with pytest.raises(RuntimeError, match="cannot reach the engine at http://127.0.0.1:9"):
        bpy.ops.panst3r.render_view_engine()
    scene.camera.data.type = "ORTHO"
    with pytest.raises(RuntimeError, match="the engine renders only perspective cameras"):
        bpy.ops.panst3r.render_view_engine()
    scene.camera = None
    with pytest.raises(RuntimeError, match="the scene has no active camera"):
        bpy.ops.panst3r.render_view_engine()
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.context.scene.camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    with pytest.raises(RuntimeError, match="the scene has no imported PanSt3R result"):
        bpy.ops.panst3r.render_view_engine()


def test_labels_are_shown_in_segment_colours(addon) -> None:
    render_view = addon.module("operators.render_view")
    ids = np.array([[0, 1, 2], [300, 70000, 1]])
    pixels = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)  # COCO-panoptic
    np.testing.assert_array_equal(render_view.decode_labels(pixels), ids)
    colours = render_view.color_labels(ids, {1: (10, 20, 30), 300: (200, 100, 0)})
    np.testing.assert_array_equal(
        colours, [[(0, 0, 0), (10, 20, 30), (150, 150, 150)], [(200, 100, 0), (150, 150, 150), (10, 20, 30)]]
    )


def _image(bpy, name: str) -> np.ndarray:
    image = bpy.data.images[name]
    out = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(out)
    return np.round(out.reshape(image.size[1], image.size[0], 4)[::-1] * 255).astype(np.uint8)  # top row first


@pytest.mark.slow
def test_render_view_with_the_real_engine(
    addon,
    scene,
    prefs,
    tiny_checkpoint: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch,
) -> None:
    bpy = addon.bpy
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the engine subprocess imports panst3r_engine from this checkout
    prefs.engine_mode, prefs.python_path, prefs.device = "LOCAL", sys.executable, "cpu"
    prefs.weights, prefs.weights_path, prefs.startup_timeout = "CUSTOM", str(tiny_checkpoint), 120.0
    _add_photos(bpy, _photos(tmp_path / "photos", 3))
    scene.panst3r.vocab, scene.panst3r.conf_threshold = "coco", 2.5  # a few thousand points: a quick fit
    extra = '{"vocab_embeddings": "random", "splats": true, "splat_steps": 2}'
    assert bpy.ops.panst3r.run(extra_options=extra) == {"FINISHED"}
    final = _drive(addon, 240)[-1]
    assert final["state"] == "done", final["error"]
    root = next(c for c in bpy.data.collections if c.get("panst3r_result"))
    assert (root["job_id"], root["engine"]) == (final["job_id"], "local")
    data = read_bundle(final["bundle"])
    assert (data.path / "splats.ply").is_file() and bpy.data.objects["splats"]["splat_count"] > 0

    reference = data.cameras[data.reference_image]
    assert scene.camera.name == f"Camera.{reference.stem}"
    scene.render.resolution_x, scene.render.resolution_y = 64, 48  # the photos' 4:3 aspect, small: a quick render
    area = bpy.context.window_manager.windows[0].screen.areas[0]
    area.type = "IMAGE_EDITOR"
    assert bpy.ops.panst3r.render_view_engine() == {"FINISHED"}
    assert area.spaces.active.image.name == "PanSt3R RGB"
    rgb, labels = _image(bpy, "PanSt3R RGB"), _image(bpy, "PanSt3R Labels")
    assert rgb.shape == labels.shape == (48, 64, 4)
    assert rgb[..., :3].std() > 5, "the RGB render is flat"
    # the engine's own render of the bundle's reference camera, scaled to 64 x 48, is the same picture:
    # the Blender camera went back to the bundle's K and pose
    from panst3r_engine.splats.render import render_view

    K = reference.K * np.array([[64 / reference.width], [48 / reference.height], [1.0]])
    expected_rgb, expected_ids = render_view(data.path, K, reference.cam_to_world, 64, 48)
    assert np.abs(rgb[..., :3].astype(int) - expected_rgb).max() <= 2
    colours = addon.module("operators.render_view").color_labels(expected_ids, {s.id: s.color for s in data.segments})
    np.testing.assert_array_equal(labels[..., :3], colours)
    segment_colours = {tuple(s.color) for s in data.segments}
    found = {tuple(c) for c in labels[..., :3].reshape(-1, 3)}
    assert found <= segment_colours | {(0, 0, 0)} and found & segment_colours, found

    jobs = Path(bpy.utils.extension_path_user(addon.package, path="jobs"))
    (jobs / final["job_id"] / "bundle" / "splats.ply").unlink()  # the engine's copy: as if run without splats
    with pytest.raises(RuntimeError, match="this result has no splats; run again with Gaussian Splats on"):
        bpy.ops.panst3r.render_view_engine()
    root["job_id"] = "20000101-000000-000000"
    with pytest.raises(RuntimeError, match="the engine no longer has job 20000101-000000-000000"):
        bpy.ops.panst3r.render_view_engine()
