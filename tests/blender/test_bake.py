"""Make Mesh's Bake Texture: the ``rgb`` colours of a mesh in a packed, UV-mapped image (importers/bake.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.blender.room import BOXES

# Measured on the room's five meshes at detail 1 and 512 px (bpy 5.0.1): mean |error| 0.003-0.014 of the
# sRGB range per channel (0.7-3.6 of 255), 95th percentile 0.009-0.040; the bounds leave room for 4.2's unwrap.
MEAN_ERROR_BOUND, P95_ERROR_BOUND = 0.02, 0.06


def _blender_version() -> tuple:
    import bpy

    return tuple(bpy.app.version)


# Blender 4.2's module build segfaults at interpreter exit after a bake in the same process (all tests pass
# first; seen 2026-12-03, cause not found yet): skipped there so the 4.2 lane's exit status stays meaningful.
pytestmark = pytest.mark.skipif(_blender_version() < (4, 3, 0), reason="bpy 4.2 segfaults at exit after a bake")


def _select_instances(bpy, scene, bundle: Path, **options) -> list:
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), **options) == {"FINISHED"}
    instances = [ob for ob in scene.objects if ob.get("segment", 0) != 0 and ob.modifiers]
    for ob in scene.objects:
        ob.select_set(ob in instances)
    return instances


def _counts(bpy) -> dict[str, int]:
    """Datablocks by kind (not node groups: Make Mesh's shared "PanSt3R Mesh" group stays once made)."""
    kinds = ("objects", "meshes", "materials", "images", "collections")
    return {kind: len(getattr(bpy.data, kind)) for kind in kinds}


def _image(ob):
    (material,) = ob.data.materials
    return next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage").image


def _sample(pixels: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples [N, C] of an image [H, W, C] (row 0 at v = 0) at UVs [N, 2], edges clamped."""
    h, w = pixels.shape[:2]
    p = uv * (w, h) - 0.5
    x0, y0 = np.floor(p[:, 0]).astype(int), np.floor(p[:, 1]).astype(int)
    fx, fy = (p[:, 0] - x0)[:, None], (p[:, 1] - y0)[:, None]

    def at(x, y):
        return pixels[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]

    top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx
    return top * (1 - fy) + (at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx) * fy


def corner_errors(bake, mesh, pixels: np.ndarray) -> np.ndarray:
    """|texture at each corner's UV - that vertex's ``rgb`` colour|, sRGB-encoded 0-1, [loops, 3].

    ``pixels`` is the texture as [height, width, channels] floats (also used by benchmarks/bench_bake.py)."""
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.uv.foreach_get("vector", uv)
    vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", vertex)
    rgb = np.empty(len(mesh.vertices) * 4, np.float32)
    mesh.color_attributes["rgb"].data.foreach_get("color", rgb)
    expected = bake.linear_to_srgb(np.clip(rgb.reshape(-1, 4)[vertex, :3], 0, 1))
    return np.abs(_sample(pixels[..., :3], uv.reshape(-1, 2)) - expected)


def _vertex_errors(addon, ob) -> np.ndarray:
    """The baked image of ``ob`` against its vertex colours (see :func:`corner_errors`)."""
    image = _image(ob)
    size = image.size[0]
    pixels = np.empty(size * size * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return corner_errors(addon.module("importers.bake"), ob.data, pixels.reshape(size, size, 4))


def test_baked_texture_reproduces_the_vertex_colours(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    _select_instances(bpy, scene, room_bundle)
    assert bpy.ops.panst3r.make_mesh(bake_texture=True, texture_size="512") == {"FINISHED"}
    made = [ob for ob in scene.objects if "mesh_source" in ob]
    assert sorted(ob["segment"] for ob in made) == sorted(BOXES)
    for ob in made:
        image = _image(ob)
        assert tuple(image.size) == (512, 512) and image.packed_file is not None
        assert ob["mesh_texture"] == 512 and ob["class"] == bpy.data.objects[ob["mesh_source"]]["class"]
        links = ob.data.materials[0].node_tree.links
        assert any(link.to_socket.name == "Base Color" and link.from_node.image == image for link in links)
        errors = _vertex_errors(addon, ob)
        print(f"{ob.name}: mean {errors.mean():.4f}, p95 {np.percentile(errors, 95):.4f}")
        assert errors.mean() < MEAN_ERROR_BOUND and np.percentile(errors, 95) < P95_ERROR_BOUND, ob.name
    points = [ob for ob in scene.objects if ob.get("segment", 0) != 0 and ob.modifiers]
    assert all(not ob.data.uv_layers for ob in points)  # the unwrap touched only the new meshes
    assert not [ob for ob in bpy.data.objects if ob.name.startswith("PanSt3R unwrap")]  # its helper is gone
    assert bpy.context.mode == "OBJECT"


def test_a_texture_budget_too_large_is_refused_and_leaves_nothing(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    _select_instances(bpy, scene, room_bundle)  # five instances at 4096² are 80 megapixels, over the 64 allowed
    before = _counts(bpy)
    with pytest.raises(RuntimeError, match=r"Cannot bake: baking 5 textures of 4096×4096 .* at most 4 instances"):
        bpy.ops.panst3r.make_mesh(bake_texture=True, texture_size="4096")
    assert _counts(bpy) == before


def test_the_import_option_bakes_and_is_refused_whole_over_budget(addon, scene, room_bundle: Path) -> None:
    bpy = addon.bpy
    before = _counts(bpy)
    with pytest.raises(RuntimeError, match="Cannot import the result: baking 5 textures"):
        bpy.ops.panst3r.import_bundle(directory=str(room_bundle), meshes=True, bake_texture=True, texture_size="4096")
    assert _counts(bpy) == before
    assert bpy.ops.panst3r.import_bundle(
        directory=str(room_bundle), meshes=True, mesh_detail=0.5, bake_texture=True, texture_size="512"
    ) == {"FINISHED"}
    made = [ob for ob in scene.objects if "mesh_source" in ob]
    assert len(made) == len(BOXES) and all(_image(ob).size[0] == 512 for ob in made)


def test_the_panel_bake_settings_reach_the_import_after_run(addon, scene, room_bundle: Path) -> None:
    """Run's automatic import takes its options from the panel: Meshes + Bake Texture + size must reach it."""
    bpy = addon.bpy
    scene.panst3r.meshes, scene.panst3r.bake_texture, scene.panst3r.texture_size = True, True, "512"
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle), mesh_detail=0.5) == {"FINISHED"}
    made = [ob for ob in scene.objects if "mesh_source" in ob]
    assert len(made) == len(BOXES) and all(_image(ob).size[0] == 512 for ob in made)


def test_a_bake_that_fails_leaves_nothing(addon, scene, room_bundle: Path, monkeypatch) -> None:
    """A failure after the unwrap and the image (here the material step, made to raise) removes the image, the
    new UV map and the mesh; one in Edit Mode is refused with a sentence before anything is made."""
    bpy, bake, meshes = addon.bpy, addon.module("importers.bake"), addon.module("importers.meshes")
    (source, *_) = _select_instances(bpy, scene, room_bundle)
    before = _counts(bpy)

    def broken(name, image):
        assert image.packed_file is not None  # the failure comes after the image exists
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bake, "_material", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        meshes.make_mesh(bpy.context, source, 0.5, 512)
    assert _counts(bpy) == before
    monkeypatch.undo()
    cube = bpy.data.meshes.new("cube")
    cube.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    editing = bpy.data.objects.new("editing", cube)
    scene.collection.objects.link(editing)
    for ob in scene.objects:
        ob.select_set(ob == editing)  # only the triangle enters Edit Mode, not the selected instances
    bpy.context.view_layer.objects.active = editing
    bpy.ops.object.mode_set(mode="EDIT")
    before = _counts(bpy)
    try:
        with pytest.raises(meshes.MeshError, match="leave Edit Mode first"):
            meshes.make_mesh(bpy.context, source, 0.5, 512)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    assert _counts(bpy) == before


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF file (glTF 2.0 spec, "GLB File Format Specification")."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data)
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert magic == b"glTF" and version == 2 and kind == b"JSON"
    return json.loads(data[20 : 20 + length])


def test_gltf_and_fbx_exports_carry_the_baked_texture(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    instances = _select_instances(bpy, scene, room_bundle)
    for ob in instances[1:]:
        ob.select_set(False)
    assert bpy.ops.panst3r.make_mesh(detail=0.5, bake_texture=True, texture_size="512") == {"FINISHED"}
    (made,) = [ob for ob in scene.objects if "mesh_source" in ob]
    for ob in scene.objects:
        ob.select_set(ob == made)
    path = tmp_path / "mesh.glb"
    assert bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True) == {"FINISHED"}
    gltf = _glb_json(path)
    (mesh,) = gltf["meshes"]
    assert all("TEXCOORD_0" in p["attributes"] for p in mesh["primitives"])
    material = gltf["materials"][mesh["primitives"][0]["material"]]
    texture = gltf["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    image = gltf["images"][texture["source"]]
    assert image["mimeType"] == "image/png" and gltf["bufferViews"][image["bufferView"]]["byteLength"] > 1000
    fbx = tmp_path / "mesh.fbx"
    assert bpy.ops.export_scene.fbx(filepath=str(fbx), use_selection=True, path_mode="COPY", embed_textures=True) == {
        "FINISHED"
    }
    data = fbx.read_bytes()
    assert b"\x89PNG\r\n\x1a\n" in data and _image(made).name.encode() in data  # the packed image, embedded


def test_rasterize_blends_the_corners_and_fill_reaches_every_texel(addon) -> None:
    bake = addon.module("importers.bake")
    uv = np.array([[[0.1, 0.1], [0.5, 0.1], [0.1, 0.5]]])
    colour = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    image, filled = bake.rasterize(uv, colour, 64)
    # texel (x, y) has its centre at ((x + 0.5) / 64, (y + 0.5) / 64); (9.5/64, 9.5/64) lies inside
    u, v = 9.5 / 64, 9.5 / 64
    l1, l2 = (u - 0.1) / 0.4, (v - 0.1) / 0.4
    np.testing.assert_allclose(image[9, 9], [1 - l1 - l2, l1, l2], atol=1e-5)
    assert filled[9, 9] and not filled[40, 40] and not filled[5, 5]
    area = filled.sum() / 64**2
    assert abs(area - 0.08) < 0.01  # the triangle covers 0.4² / 2 of the square
    bake.fill_empty(image, filled)
    assert filled.all() and np.isfinite(image).all()
    np.testing.assert_allclose(image.sum(-1), 1.0, atol=1e-5)  # every filled texel is a blend of the corners
