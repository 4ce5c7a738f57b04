"""``panst3r.import_bundle`` in real Blender: objects, attributes, materials, cameras, undo, tools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle.read import read_bundle


def _attribute(mesh, name: str, width: int, dtype) -> np.ndarray:
    attr = mesh.attributes[name]
    key = {"FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color", "FLOAT": "value", "INT": "value"}[attr.data_type]
    out = np.empty(len(mesh.vertices) * width, dtype)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _transform(addon, collection):
    convert = addon.module("importers.convert")
    matrix = np.array(collection["world_matrix"], dtype=np.float64).reshape(4, 4)
    scale = float(collection["scale"])
    return convert.WorldTransform(matrix[:3, :3] / scale, scale, matrix[:3, 3])


def _import(bpy, bundle: Path, **options):
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), **options) == {"FINISHED"}
    return next(c for c in bpy.data.collections if c.get("panst3r_result"))


def test_objects_and_points_match_the_bundle(addon, scene, synthetic_bundle: Path) -> None:
    bpy, data = addon.bpy, read_bundle(synthetic_bundle)
    collection = _import(bpy, synthetic_bundle, scale=2.0)
    transform = _transform(addon, collection)
    convert = addon.module("importers.convert")
    instances = [ob for ob in scene.objects if "segment" in ob]
    with_points = [s for s in data.segments if s.point_count > 0]
    has_unlabelled = bool((data.points["segment"] == 0).any())
    assert len(instances) == len(with_points) + has_unlabelled
    names = {s.id: data.classes[s.class_id].name for s in data.segments}
    for ob in instances:
        seg = ob["segment"]
        mask = data.points["segment"] == seg
        assert ob["point_count"] == len(ob.data.vertices) == int(mask.sum())
        assert ob["class"] == names.get(seg, "unlabelled") and ob.name.startswith(ob["class"])
        if seg:
            segment = next(s for s in data.segments if s.id == seg)
            assert ob["class_id"] == segment.class_id and ob["score"] == pytest.approx(segment.score)
            assert ob.users_collection[0].name.startswith(ob["class"])
        mesh = ob.data
        np.testing.assert_allclose(
            _attribute(mesh, "position", 3, np.float32), transform.points(data.points["xyz"][mask]), atol=1e-5
        )
        np.testing.assert_array_equal(_attribute(mesh, "conf", 1, np.float32), data.points["conf"][mask])
        np.testing.assert_allclose(
            _attribute(mesh, "rgb", 4, np.float32), convert.linear_rgba(data.points["rgb"][mask]), atol=1e-6
        )
        assert set(_attribute(mesh, "segment", 1, np.int32)) == {seg}
        assert set(_attribute(mesh, "class", 1, np.int32)) == {ob["class_id"]}
    assert collection.name == f"PanSt3R {synthetic_bundle.name}" and collection["scale"] == 2.0


def test_one_material_per_class_in_its_colour(addon, scene, synthetic_bundle: Path) -> None:
    bpy, data = addon.bpy, read_bundle(synthetic_bundle)
    _import(bpy, synthetic_bundle)
    convert, points = addon.module("importers.convert"), addon.module("importers.points")
    by_class: dict[str, set] = {}
    for ob in (ob for ob in scene.objects if "segment" in ob):
        modifier = ob.modifiers[points.MODIFIER]
        material = ob.material_slots[0].material
        assert material in [modifier[key] for key in modifier.keys()]  # noqa: SIM118 (not iterable)
        by_class.setdefault(ob["class"], set()).add(material.name)
    assert all(len(mats) == 1 for mats in by_class.values())
    for c in data.classes.values():
        if c.name in by_class:
            material = bpy.data.materials[f"PanSt3R {c.name}"]
            np.testing.assert_allclose(material.diffuse_color, convert.linear_color(c.color), atol=1e-6)
            assert material.node_tree.nodes["Class Colour"].outputs[0].default_value[:] == pytest.approx(
                convert.linear_color(c.color)
            )


def test_cameras_round_trip(addon, scene, synthetic_bundle: Path) -> None:
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    bpy, data = addon.bpy, read_bundle(synthetic_bundle)
    collection = _import(bpy, synthetic_bundle, scale=0.5)
    transform, convert = _transform(addon, collection), addon.module("importers.convert")
    cameras = [ob for ob in scene.objects if ob.type == "CAMERA"]
    assert sorted(ob.name for ob in cameras) == sorted(f"Camera.{c.stem}" for c in data.cameras)
    assert scene.camera.name == f"Camera.{data.cameras[0].stem}"
    assert (scene.render.resolution_x, scene.render.resolution_y) == (data.cameras[0].width, data.cameras[0].height)
    rng = np.random.default_rng(0)
    for cam in data.cameras:
        ob = bpy.data.objects[f"Camera.{cam.stem}"]
        pose = transform.camera_to_opencv(np.array(ob.matrix_world))
        np.testing.assert_allclose(pose, cam.cam_to_world, atol=1e-4)
        c = ob.data
        intr = convert.CameraIntrinsics(c.lens, c.sensor_width, c.sensor_height, c.sensor_fit, c.shift_x, c.shift_y)
        np.testing.assert_allclose(convert.intrinsics_to_K(intr, cam.width, cam.height), cam.K, atol=1e-4)
        assert c.background_images[0].image.filepath == str(cam.photo)
        # Blender's own projection agrees with OpenCV's for points in front of the camera
        addon.module("importers.cameras").use_camera(scene, ob)
        local = np.column_stack([rng.uniform(-0.5, 0.5, (10, 2)), rng.uniform(1, 3, 10)])
        world = local @ cam.cam_to_world[:3, :3].T + cam.cam_to_world[:3, 3]
        expected = (local @ cam.K.T)[:, :2] / local[:, 2:]
        for point, pixel in zip(transform.points(world.astype(np.float32)), expected):
            ndc = world_to_camera_view(scene, ob, Vector(point.tolist()))
            np.testing.assert_allclose([ndc.x * cam.width, (1 - ndc.y) * cam.height], pixel, atol=1e-3)


def test_import_is_one_undo_step(addon, scene, synthetic_bundle: Path) -> None:
    """bpy.ops called from Python push no undo step in background mode, so push around the operator the way
    Blender's UI does after an operator with the UNDO flag, then check that one undo removes everything."""
    bpy = addon.bpy
    assert "UNDO" in bpy.types.PANST3R_OT_import_bundle.bl_options
    before = {ob.name for ob in bpy.data.objects}, {c.name for c in bpy.data.collections}
    bpy.ops.ed.undo_push(message="before")
    _import(bpy, synthetic_bundle)
    bpy.ops.ed.undo_push(message="Import PanSt3R Result")
    assert len(bpy.data.objects) > len(before[0])
    bpy.ops.ed.undo()
    assert ({ob.name for ob in bpy.data.objects}, {c.name for c in bpy.data.collections}) == before
    assert not any(m.name.startswith("PanSt3R ") for m in bpy.data.materials)
    bpy.ops.ed.redo()
    assert sum("segment" in ob for ob in bpy.data.objects) == 5


def test_levelling_on_the_floor(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, room_bundle)
    floor = next(ob for ob in scene.objects if ob.get("class") == "floor")
    z = _attribute(floor.data, "position", 3, np.float32)[:, 2]
    assert abs(np.median(z)) < 0.01 and np.std(z) < 0.01
    reference = scene.camera.matrix_world.to_3x3()
    forward, up = (
        reference @ __import__("mathutils").Vector((0, 0, -1)),
        reference @ __import__("mathutils").Vector((0, 1, 0)),
    )
    assert forward.z == pytest.approx(-np.sin(np.radians(15)), abs=0.01)  # the photo looked 15° down
    assert up.z > 0.95
    bpy.ops.wm.read_homefile(use_empty=True)
    _import(bpy, room_bundle, level_floor=False)
    forward = bpy.context.scene.camera.matrix_world.to_3x3() @ __import__("mathutils").Vector((0, 0, -1))
    assert tuple(forward) == pytest.approx((0, 1, 0), abs=1e-6)  # not levelled: the reference looks along +Y


def test_unreadable_bundles_are_reported(addon, scene, synthetic_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    bundle = tmp_path / "future"
    shutil.copytree(synthetic_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": "2.0"}))
    with pytest.raises(RuntimeError, match="format version 2.0, but this add-on reads format 1.x only"):
        bpy.ops.panst3r.import_bundle(directory=str(bundle))
    with pytest.raises(RuntimeError, match="not a PanSt3R result bundle"):
        bpy.ops.panst3r.import_bundle(directory=str(tmp_path))
    assert not any("segment" in ob for ob in bpy.data.objects)


def test_display_settings_reach_every_object(addon, scene, synthetic_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, synthetic_bundle)
    materials, points = addon.module("importers.materials"), addon.module("importers.points")
    settings = scene.panst3r
    for mode, value in (("PHOTO", 2.0), ("INSTANCE", 1.0), ("SEMANTIC", 0.0)):
        settings.display = mode
        assert (
            bpy.data.node_groups[materials.DISPLAY_GROUP].nodes[materials.MODE_NODE].outputs[0].default_value == value
        )
        assert materials.display_mode() == mode
    settings.point_size, settings.min_conf = 0.05, 2.5
    group = bpy.data.node_groups[points.POINTS_GROUP]
    ids = {item.name: item.identifier for item in group.interface.items_tree if item.item_type == "SOCKET"}
    for ob in (ob for ob in scene.objects if "segment" in ob):
        modifier = ob.modifiers[points.MODIFIER]
        assert modifier[ids[points.RADIUS]] == pytest.approx(0.05)
        assert modifier[ids[points.MIN_CONF]] == pytest.approx(2.5)


def test_points_are_a_point_cloud_after_evaluation(addon, scene, synthetic_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, synthetic_bundle, min_conf=3.0)
    ob = bpy.data.objects["wall.001"]
    evaluated = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    if not hasattr(bpy.types, "GeometrySet"):
        pytest.skip("bpy.types.GeometrySet (used to inspect evaluated geometry) needs Blender 4.3 or newer")
    geometry = bpy.types.GeometrySet.from_evaluated_object(evaluated)
    conf = _attribute(ob.data, "conf", 1, np.float32)
    assert geometry.pointcloud is not None and (geometry.mesh is None or len(geometry.mesh.vertices) == 0)
    assert len(geometry.pointcloud.points) == int((conf >= 3.0).sum())


def test_select_class_and_extract_instance(addon, scene, synthetic_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, synthetic_bundle)
    chair = bpy.data.objects["chair.001"]
    bpy.context.view_layer.objects.active = chair
    assert bpy.ops.panst3r.select_class() == {"FINISHED"}
    assert sorted(ob.name for ob in bpy.context.selected_objects) == ["chair.001", "chair.002"]
    assert bpy.ops.panst3r.select_class(class_name="Dining Table") == {"FINISHED"}
    assert [ob.name for ob in bpy.context.selected_objects] == ["dining table.001"]
    bpy.context.view_layer.objects.active = chair
    assert bpy.ops.panst3r.extract_instance(hide_others=True) == {"FINISHED"}
    copy = bpy.context.view_layer.objects.active
    assert copy.name == "chair.001 extracted" and copy.users_collection[0].name == "Extracted"
    world = np.array([tuple(copy.matrix_world @ v.co) for v in copy.data.vertices])
    original = np.array([tuple(v.co) for v in chair.data.vertices])
    np.testing.assert_allclose(world, original, atol=1e-5)  # same place in the world, origin at the centre
    assert np.linalg.norm(np.mean([tuple(v.co) for v in copy.data.vertices], axis=0)) < 1e-5
    assert chair.hide_get() and not copy.hide_get()
    assert bpy.ops.panst3r.show_all() == {"FINISHED"} and not chair.hide_get()
    with pytest.raises(RuntimeError, match="No imported instance has the class 'sofa'"):
        bpy.ops.panst3r.select_class(class_name="sofa")


def test_photos_from_blend_images(addon, scene, tmp_path: Path) -> None:
    bpy = addon.bpy
    photos, png = addon.module("operators.photos"), addon.module("bundle.png")
    generated = bpy.data.images.new("generated photo", 16, 12)
    generated.generated_color = (1.0, 0.5, 0.0, 1.0)
    helper = bpy.data.images.new("helper", 8, 8)
    on_disk = tmp_path / "disk.png"
    helper.save(filepath=str(on_disk))
    packed = bpy.data.images.load(str(on_disk))
    packed.name = "packed"
    packed.pack()
    bpy.data.images.remove(helper)
    assert bpy.ops.panst3r.add_blend_images(image="__ALL__") == {"FINISHED"}
    files = photos.resolve_photos(scene.panst3r, tmp_path / "uploads")
    assert [p.name for p in files] == ["generated_photo.png", "packed.png"]  # named after the images
    assert files[1].read_bytes() == on_disk.read_bytes() and files[1] != on_disk  # the packed bytes, as they are
    pixels = png.read_png(files[0])
    assert pixels.shape == (12, 16, 4) and tuple(pixels[0, 0]) == (255, 128, 0, 255)  # a byte image, as stored
    assert generated.source == "GENERATED" and generated.filepath == ""  # the user's image is left alone
    scene.panst3r.photos.clear()
    with pytest.raises(photos.PhotoError, match="no photos are chosen"):
        photos.resolve_photos(scene.panst3r, tmp_path / "uploads")
