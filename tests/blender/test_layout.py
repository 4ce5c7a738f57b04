"""Layout proxies in real Blender: box empties on import, Replace with Asset, Export Layout JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.blender.room import BOXES

SCALE = 2.0


def _world_corners(ob) -> np.ndarray:
    """float [8, 3] the bounding-box corners of a mesh object (or of a cube empty's cube) in the world."""
    from mathutils import Vector

    __import__("bpy").context.view_layer.update()  # matrix_world of objects changed by an operator
    cube = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    corners = cube if ob.type == "EMPTY" else [tuple(c) for c in ob.bound_box]
    return np.array([tuple(ob.matrix_world @ Vector(c)) for c in corners])


def _import_with_proxies(bpy, bundle: Path) -> dict:
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), scale=SCALE, layout_proxies=True) == {"FINISHED"}
    return {ob["segment"]: ob for ob in bpy.data.objects if ob.get("layout_proxy")}


def test_import_makes_one_box_empty_per_instance(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    proxies = _import_with_proxies(bpy, room_bundle)
    assert set(proxies) == set(BOXES)
    collection = bpy.data.collections["Layout"]
    assert all(ob.users_collection[0] == collection and ob.empty_display_type == "CUBE" for ob in proxies.values())
    for seg_id in (3, 4, 5):  # chairs and table, OpenCV box before the 15° tilt, floor at y = 1.2
        _, (x, y, z), size = BOXES[seg_id]
        ob = proxies[seg_id]
        assert ob["class"] == ("table" if seg_id == 5 else "chair")
        np.testing.assert_allclose(tuple(ob.location), np.array([x, z, 1.2 - y]) * SCALE, atol=0.03 * SCALE)
        half = np.array(sorted([size[0], size[2]], reverse=True) + [size[1]]) * SCALE / 2
        np.testing.assert_allclose(tuple(ob.scale), half, atol=0.03 * SCALE)
        assert tuple(ob.rotation_euler)[:2] == (0.0, 0.0)
        turn = math.degrees(ob.rotation_euler.z) % 90  # the room's boxes are square to the reference camera
        assert min(turn, 90 - turn) < 1.0
    # the points of a proxy's instance lie in its box
    chair = next(ob for ob in scene.objects if ob.get("segment") == 3 and ob.type == "MESH")
    local = np.array([tuple(proxies[3].matrix_world.inverted() @ v.co) for v in chair.data.vertices])
    assert np.mean(np.all(np.abs(local) <= 1.01, axis=1)) > 0.97


def test_the_option_is_off_by_default_and_follows_the_panel(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle)) == {"FINISHED"}
    assert not [ob for ob in bpy.data.objects if ob.get("layout_proxy")] and "Layout" not in bpy.data.collections
    scene.panst3r.layout_proxies = True  # the panel's checkbox
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle)) == {"FINISHED"}
    assert len([ob for ob in bpy.data.objects if ob.get("layout_proxy")]) == len(BOXES)


def test_replace_with_asset_puts_a_cube_in_the_box(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    proxies = _import_with_proxies(bpy, room_bundle)
    mesh = bpy.data.meshes.new("crate")
    mesh.from_pydata([(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0.0, 1.0)], [], [])
    cube = bpy.data.objects.new("Crate", mesh)  # 1 m cube standing on its origin
    scene.collection.objects.link(cube)
    table = proxies[5]
    bpy.context.view_layer.objects.active = table
    assert bpy.ops.panst3r.replace_with_asset(asset="Crate") == {"FINISHED"}
    placed = bpy.context.view_layer.objects.active
    assert placed.data == mesh and placed["segment"] == 5 and table.hide_get()
    corners, box = _world_corners(placed), _world_corners(table)
    side = 2 * min(table.scale)  # uniform fit: the box's smallest side
    np.testing.assert_allclose(tuple(placed.scale), [side] * 3, rtol=1e-5)
    assert corners[:, 2].min() == pytest.approx(box[:, 2].min(), abs=1e-5)  # standing on the box's bottom
    np.testing.assert_allclose(corners.mean(0)[:2], tuple(table.location)[:2], atol=1e-5)
    assert placed.rotation_euler.z == pytest.approx(table.rotation_euler.z, abs=1e-6)
    bpy.context.view_layer.objects.active = table
    assert bpy.ops.panst3r.replace_with_asset(asset="Crate", fit="FILL") == {"FINISHED"}
    filled = _world_corners(bpy.context.view_layer.objects.active)
    np.testing.assert_allclose(np.sort(filled, axis=0), np.sort(box, axis=0), atol=1e-4)  # exactly the box


def test_replace_with_a_library_asset_and_refusals(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    mesh = bpy.data.meshes.new("lib crate")
    mesh.from_pydata([(x, y, z) for x in (-1, 1) for y in (-2, 2) for z in (-1, 1)], [], [])
    library = tmp_path / "assets.blend"
    bpy.data.libraries.write(str(library), {bpy.data.objects.new("Sofa", mesh)})
    proxies = _import_with_proxies(bpy, room_bundle)
    with pytest.raises(RuntimeError, match="Make a layout proxy"):
        bpy.ops.panst3r.replace_with_asset(asset="Sofa", filepath=str(library))
    bpy.context.view_layer.objects.active = proxies[5]
    with pytest.raises(RuntimeError, match="has no object named 'Chair'"):
        bpy.ops.panst3r.replace_with_asset(asset="Chair", filepath=str(library))
    with pytest.raises(RuntimeError, match="No object is named 'Nothing'"):
        bpy.ops.panst3r.replace_with_asset(asset="Nothing")
    assert bpy.ops.panst3r.replace_with_asset(asset="Sofa", filepath=str(library)) == {"FINISHED"}
    placed = bpy.context.view_layer.objects.active
    assert placed.name.startswith("Sofa") and placed.users_collection[0].name.startswith("Layout Assets")  # appended
    assert placed.library is None and placed.data.library is None
    # the library object is long along its y: turned 90° so its long side follows the box's
    turn = (placed.rotation_euler.z - proxies[5].rotation_euler.z) % math.pi
    assert turn == pytest.approx(math.pi / 2, abs=1e-5)
    bpy.context.view_layer.objects.active = proxies[3]
    assert bpy.ops.panst3r.replace_with_asset(asset="Sofa", filepath=str(library), link=True) == {"FINISHED"}
    linked = bpy.context.view_layer.objects.active
    assert linked.library is None and linked.data.library is not None  # a local object on the linked mesh


def test_export_layout_json_follows_edited_proxies(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    proxies = _import_with_proxies(bpy, room_bundle)
    proxies[3].location.x += 0.5  # the user moves a proxy
    path = tmp_path / "scene_layout"
    assert bpy.ops.panst3r.export_layout(filepath=str(path)) == {"FINISHED"}
    document = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert document["format"] == "panst3r-layout" and document["version"] == 1
    assert np.array(document["frame"]["world_to_frame"]).shape == (4, 4)
    boxes = {b["segment"]: b for b in document["boxes"]}
    assert set(boxes) == set(BOXES)
    for seg_id, ob in proxies.items():
        np.testing.assert_allclose(boxes[seg_id]["centre"], tuple(ob.location), atol=1e-5)
        assert boxes[seg_id]["class"] == ob["class"]
    np.testing.assert_allclose(sorted(boxes[5]["size"]), sorted(2 * np.array(tuple(proxies[5].scale))), rtol=1e-5)
    bpy.ops.wm.read_homefile(use_empty=True)
    with pytest.raises(RuntimeError, match="No layout proxies"):
        bpy.ops.panst3r.export_layout(filepath=str(path))


def test_proxies_match_the_engine_layout_export(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    """At scale 1 the add-on's import frame is the engine's layout frame: the same boxes either way."""
    from panst3r_engine.bundle.layout import export_layout
    from panst3r_engine.bundle.read import read_bundle as engine_read

    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle), layout_proxies=True) == {"FINISHED"}
    proxies = {ob["segment"]: ob for ob in bpy.data.objects if ob.get("layout_proxy")}
    document = json.loads(export_layout(engine_read(room_bundle), tmp_path).read_text(encoding="utf-8"))
    assert {b["segment"] for b in document["boxes"]} == set(proxies)
    for box in document["boxes"]:
        ob = proxies[box["segment"]]
        np.testing.assert_allclose(tuple(ob.location), box["centre"], atol=1e-3)
        np.testing.assert_allclose(sorted(2 * np.array(tuple(ob.scale))), sorted(box["size"]), atol=1e-3)
        turn = math.degrees(ob.rotation_euler.z - box["yaw"]) % 90  # square footprints may swap their sides
        assert min(turn, 90 - turn) < 0.1
