"""The splat layer in real Blender: attributes from splats.ply, Geometry Nodes ellipsoids, material, toggle, colours.

The bundle is the synthetic one of tests/bundle_utils.py plus a splats.ply written by the engine's own writer:
Gaussian 0 is a large, opaque, red ellipsoid 3 units in front of the reference camera (for the render checks),
the others are random and sit behind that camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle.read import read_bundle
from blender_addon.bundle.splats import SH_C0, read_splats
from blender_addon.importers import convert

N = 200
FRONT_RGB = np.array([0.9, 0.2, 0.1])


@pytest.fixture(scope="module")
def splat_bundle(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from panst3r_engine.bundle.write import write_bundle
    from panst3r_engine.splats.export import write_splats_ply
    from panst3r_engine.splats.model import SplatModel
    from tests.bundle_utils import SEGMENT_CLASSES, make_bundle_inputs

    inputs = make_bundle_inputs()
    reference = np.array(inputs[0]["cameras"][0]["cam_to_world"])
    gen = torch.Generator().manual_seed(0)
    local = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    local[:, 2] = -1.0 - local[:, 2].abs()  # behind the reference camera
    local[0] = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    means = local @ torch.from_numpy(reference[:3, :3]).T + torch.from_numpy(reference[:3, 3])
    segment = torch.tensor(list(SEGMENT_CLASSES) + [0], dtype=torch.int32)[torch.randint(0, 6, (N,), generator=gen)]
    class_id = torch.tensor([SEGMENT_CLASSES.get(int(s), -1) for s in segment], dtype=torch.int32)
    segment[0], class_id[0] = 2, 1
    scales, opacities = torch.randn(N, 3, generator=gen) * 0.3 - 3, torch.randn(N, generator=gen) * 2
    scales[0], opacities[0] = -0.5, 9.0  # sigma 0.61: it covers the whole view
    sh0 = torch.randn(N, 1, 3, generator=gen)
    sh0[0, 0] = torch.from_numpy((FRONT_RGB - 0.5) / SH_C0)
    model = SplatModel(
        means=means.float(),
        scales=scales,
        quats=torch.randn(N, 4, generator=gen) * 3,
        opacities=opacities,
        sh0=sh0,
        shN=torch.zeros(N, 3, 3),
        segment=segment,
        class_id=class_id,
    )
    folder = tmp_path_factory.mktemp("splats")
    ply = write_splats_ply(model, folder / "splats.ply")
    return write_bundle(folder / "bundle", *inputs, extra_files={"splats.ply": ply})


def _attribute(mesh, name: str) -> np.ndarray:
    attr = mesh.attributes[name]
    key, width, dtype = {
        "FLOAT_VECTOR": ("vector", 3, np.float32),
        "FLOAT_COLOR": ("color", 4, np.float32),
        "QUATERNION": ("value", 4, np.float32),
        "FLOAT": ("value", 1, np.float32),
        "INT": ("value", 1, np.int32),
    }[attr.data_type]
    out = np.empty(len(mesh.vertices) * width, dtype)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _import(bpy, bundle: Path, **options):
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), **options) == {"FINISHED"}
    root = next(c for c in bpy.data.collections if c.get("panst3r_result"))
    return root, convert.WorldTransform.from_matrix(list(root["world_matrix"]), float(root["scale"]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_reader_activates_the_engine_values(splat_bundle: Path) -> None:
    """The add-on's numpy reader against the engine's own reader of the same file."""
    from panst3r_engine.splats.export import read_splats_ply

    model, ours = read_splats_ply(splat_bundle / "splats.ply"), read_splats(splat_bundle / "splats.ply")
    np.testing.assert_array_equal(ours["xyz"], model.means.numpy())
    np.testing.assert_allclose(ours["scale"], np.exp(model.scales.numpy()), rtol=1e-6)
    quats = model.quats.numpy().astype(np.float64)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    np.testing.assert_allclose(ours["rotation"], quats * np.sign(quats[:, :1]), atol=1e-6)
    np.testing.assert_allclose(ours["opacity"], _sigmoid(model.opacities.numpy()), atol=1e-6)
    np.testing.assert_allclose(ours["rgb"], np.clip(0.5 + SH_C0 * model.sh0.numpy()[:, 0], 0, 1), atol=1e-6)
    np.testing.assert_array_equal(ours["segment"], model.segment.numpy())
    np.testing.assert_array_equal(ours["class"], model.class_id.numpy())


def test_attributes_round_trip(addon, scene, splat_bundle: Path) -> None:
    from panst3r_engine.splats.export import read_splats_ply

    bpy, data = addon.bpy, read_bundle(splat_bundle)
    _, transform = _import(bpy, splat_bundle, scale=2.0)
    model = read_splats_ply(splat_bundle / "splats.ply")
    ob = bpy.data.objects["splats"]
    mesh = ob.data
    assert ob["splat_count"] == len(mesh.vertices) == N
    np.testing.assert_allclose(_attribute(mesh, "position"), transform.points(model.means.numpy()), atol=1e-5)
    np.testing.assert_allclose(_attribute(mesh, "scale"), 2.0 * np.exp(model.scales.numpy()), rtol=1e-6)
    assert mesh.attributes["rotation"].data_type == "QUATERNION"
    quats = model.quats.numpy().astype(np.float64)
    rotations = convert.quaternion_to_matrix(quats / np.linalg.norm(quats, axis=1, keepdims=True))
    np.testing.assert_allclose(
        convert.quaternion_to_matrix(_attribute(mesh, "rotation")), transform.rotation @ rotations, atol=1e-5
    )  # the same orientation in Blender's world
    opacity = _sigmoid(model.opacities.numpy())
    np.testing.assert_allclose(_attribute(mesh, "opacity"), opacity, atol=1e-6)
    color = _attribute(mesh, "color")
    rgb = np.clip(0.5 + SH_C0 * model.sh0.numpy()[:, 0].astype(np.float64), 0, 1)
    np.testing.assert_allclose(color[:, :3], convert.srgb_to_linear(rgb), atol=1e-6)
    np.testing.assert_allclose(color[:, 3], opacity, atol=1e-6)
    segment, class_id = _attribute(mesh, "segment"), _attribute(mesh, "class")
    np.testing.assert_array_equal(segment, model.segment.numpy())
    np.testing.assert_array_equal(class_id, model.class_id.numpy())
    seg_colors = {s.id: s.color for s in data.segments}
    class_colors = {c.id: c.color for c in data.classes.values()}
    grey = (150, 150, 150)
    np.testing.assert_allclose(
        _attribute(mesh, "segment_color"),
        convert.linear_rgba([seg_colors.get(int(s), grey) for s in segment]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _attribute(mesh, "class_color"),
        convert.linear_rgba([class_colors.get(int(c), grey) for c in class_id]),
        atol=1e-6,
    )
    assert sum("segment" in o for o in bpy.data.objects) == 5  # the point objects are unaffected
    bpy.ops.wm.read_homefile(use_empty=True)
    _import(bpy, splat_bundle, splats=False)
    assert "splats" not in bpy.data.objects


def test_geometry_nodes_place_one_ellipsoid_per_gaussian(addon, scene, splat_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, splat_bundle)
    splats = addon.module("importers.splats")
    ob = bpy.data.objects["splats"]
    modifier = ob.modifiers[splats.MODIFIER]
    group = modifier.node_group
    kinds = {node.bl_idname for node in group.nodes}
    assert {
        "GeometryNodeInstanceOnPoints",
        "GeometryNodeMeshIcoSphere",
        "GeometryNodeSetMaterial",
        "GeometryNodeRealizeInstances",
    } <= kinds
    assert (
        next(n for n in group.nodes if n.bl_idname == "GeometryNodeMeshIcoSphere").inputs["Subdivisions"].default_value
        == splats.SUBDIVISIONS
        == 2
    )
    assert splats.set_splats_visible(bpy.context, True) == 1
    assert splats.set_splats_input(ob, splats.SIZE, 3.0)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    matrices = {
        inst.random_id: np.array(inst.matrix_world)
        for inst in depsgraph.object_instances
        if inst.is_instance and inst.parent is not None and inst.parent.original == ob
    }
    assert len(matrices) == N
    mesh = ob.data
    position, scale = _attribute(mesh, "position"), _attribute(mesh, "scale")
    expected = np.zeros((N, 4, 4))
    expected[:, :3, :3] = convert.quaternion_to_matrix(_attribute(mesh, "rotation")) * (3.0 * scale[:, None, :])
    expected[:, :3, 3], expected[:, 3, 3] = position, 1.0
    got = np.stack(list(matrices.values()))
    order = [int(np.argmin(np.abs(position - m[:3, 3]).sum(axis=1))) for m in got]  # instance -> its Gaussian
    assert sorted(order) == list(range(N))
    np.testing.assert_allclose(got, expected[order], atol=1e-5)
    # a threshold on opacity leaves the faint Gaussians out; realizing makes one ico-sphere (42 vertices) each
    opaque = int((_attribute(mesh, "opacity") >= 0.5).sum())
    splats.set_splats_input(ob, splats.MIN_OPACITY, 0.5)
    splats.set_splats_input(ob, splats.REALIZE, True)
    evaluated = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    realized = evaluated.to_mesh()
    assert len(realized.vertices) == 42 * opaque
    # each vertex carries its offset in standard deviations (Size 3 on a unit sphere) and its Gaussian's axes
    # over sigma (the inverse of the instance's linear part, transposed), for the falloff of the material
    local = _attribute(realized, splats.LOCAL)
    np.testing.assert_allclose(np.linalg.norm(local, axis=1), 3.0, rtol=1e-5)
    axes = np.stack([_attribute(realized, name) for name in splats.AXES], 1)  # [V, axis, xyz]
    keep = np.flatnonzero(_attribute(mesh, "opacity") >= 0.5)  # realized vertices come in instance order
    np.testing.assert_allclose(axes, np.linalg.inv(expected[keep, :3, :3] / 3.0).repeat(42, 0), rtol=1e-4, atol=1e-4)
    evaluated.to_mesh_clear()


def test_material_is_emission_mixed_with_transparency(addon, scene, splat_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, splat_bundle)
    splats, materials = addon.module("importers.splats"), addon.module("importers.materials")
    ob = bpy.data.objects["splats"]
    material = ob.material_slots[0].material
    modifier = ob.modifiers[splats.MODIFIER]
    assert modifier[splats.input_identifier(modifier.node_group, splats.MATERIAL)] == material
    nodes = material.node_tree.nodes
    mix = nodes["Opacity"]
    linked = {link.from_node.bl_idname for link in mix.inputs[1].links + mix.inputs[2].links}
    assert linked == {"ShaderNodeBsdfTransparent", "ShaderNodeEmission"}
    output = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    assert output.inputs["Surface"].links[0].from_node == mix
    reads = {(n.attribute_type, n.attribute_name) for n in nodes if n.bl_idname == "ShaderNodeAttribute"}
    assert {("INSTANCER", name) for name in ("color", "opacity", "segment_color", "class_color")} <= reads
    assert nodes["Display"].node_tree == materials.display_group()
    if hasattr(material, "surface_render_method"):
        assert material.surface_render_method == "BLENDED"
    else:
        assert material.blend_method == "BLEND"


def test_an_older_look_in_the_file_is_not_reused(addon, scene, splat_bundle: Path) -> None:
    """A file saved with the solid-ellipsoid look keeps its group and material; a new import gets the new ones."""
    bpy, splats = addon.bpy, addon.module("importers.splats")
    old_group = bpy.data.node_groups.new(splats.SPLATS_GROUP, "GeometryNodeTree")
    old_material = bpy.data.materials.new(splats.SPLATS_MATERIAL)
    if old_material.node_tree is None:
        old_material.use_nodes = True
    old_material.node_tree.nodes.new("ShaderNodeGroup").name = "Display"
    _import(bpy, splat_bundle)
    ob = bpy.data.objects["splats"]
    group, material = ob.modifiers[splats.MODIFIER].node_group, ob.material_slots[0].material
    assert group != old_group and material != old_material
    assert group[splats.LOOK_PROPERTY] == material[splats.LOOK_PROPERTY] == splats.LOOK_VERSION
    assert splats.FALLOFF_NODE in material.node_tree.nodes
    _import(bpy, splat_bundle)  # a second import shares them
    assert {o.modifiers[splats.MODIFIER].node_group for o in bpy.data.objects if o.name.startswith("splats")} == {group}


def test_one_toggle_hides_and_shows_the_layer(addon, scene, splat_bundle: Path) -> None:
    bpy = addon.bpy
    _import(bpy, splat_bundle)
    splats = addon.module("importers.splats")
    ob = bpy.data.objects["splats"]
    [(collection, layer)] = splats.splat_layers(bpy.context)
    assert ob.name in collection.objects and collection.name.startswith("Splats")
    assert layer.exclude and not ob.visible_get()  # starts hidden, so it does not cover the segments
    layer.exclude = False  # the panel's checkbox
    assert ob.visible_get() and ob.name in bpy.context.view_layer.objects
    assert splats.set_splats_visible(bpy.context, False) == 1
    assert layer.exclude and not ob.visible_get()
    _import(bpy, splat_bundle)  # a second result: a second layer, toggled on its own
    assert len(splats.splat_layers(bpy.context)) == 2
    assert splats.set_splats_visible(bpy.context, True, collection) == 1
    assert [lay.exclude for _, lay in splats.splat_layers(bpy.context)] == [False, True]


def _render_centre(bpy, scene, path: Path) -> np.ndarray:
    from blender_addon.bundle.png import read_png

    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 2, False
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    pixels = read_png(path)
    h, w = pixels.shape[:2]
    return pixels[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, pixels.shape[2]).mean(axis=0)


def test_colour_switch_recolours_the_splats(addon, scene, splat_bundle: Path, tmp_path: Path) -> None:
    """Cycles renders the front Gaussian in its photo colour, its segment's and its class's colour."""
    bpy, data = addon.bpy, read_bundle(splat_bundle)
    _import(bpy, splat_bundle)
    for ob in scene.objects:  # only the splats in view
        ob.hide_render = "segment" in ob
    addon.module("importers.splats").set_splats_visible(bpy.context, True)
    segment = next(s for s in data.segments if s.id == 2)
    expected = {
        "PHOTO": np.round(FRONT_RGB * 255),
        "INSTANCE": segment.color,
        "SEMANTIC": data.classes[segment.class_id].color,
    }
    for mode, rgb in expected.items():
        scene.panst3r.display = mode
        centre = _render_centre(bpy, scene, tmp_path / f"{mode}.png")
        # the central 4 x 4 pixels are up to 0.35 sigma off the Gaussian's centre: exp(-0.35^2 / 2) = 0.94
        assert centre[3] > 235, f"{mode}: the front splat does not cover the centre (alpha {centre[3]})"
        np.testing.assert_allclose(centre[:3], rgb, atol=6, err_msg=mode)


def test_front_splat_falls_off_as_a_gaussian(addon, scene, splat_bundle: Path, tmp_path: Path) -> None:
    """Along the centre row the front Gaussian's coverage is exp(-x^2 / 2) in its standard deviations (the solid
    ellipsoids covered the 2-sigma disc fully): sigma 0.61 at 3 units through a focal length of 30 px is 6.1 px."""
    from blender_addon.bundle.png import read_png

    bpy = addon.bpy
    _import(bpy, splat_bundle)
    for ob in scene.objects:
        ob.hide_render = "segment" in ob
    addon.module("importers.splats").set_splats_visible(bpy.context, True)
    _render_centre(bpy, scene, tmp_path / "front.png")
    pixels = read_png(tmp_path / "front.png").astype(np.float64)
    height, width = pixels.shape[:2]
    alpha = pixels[height // 2 - 1 : height // 2 + 1, :, 3].mean(axis=0) / 255.0
    sigma_px = np.exp(-0.5) * 30.0 / 3.0
    x = (np.arange(width) + 0.5 - width / 2) / sigma_px
    np.testing.assert_allclose(alpha, np.exp(-0.5 * x**2), atol=0.06)


def test_panel_shows_the_toggle_and_the_render_button(addon, scene, splat_bundle: Path) -> None:
    from tests.blender.test_addon import _Layout

    class Recorder(_Layout):  # records what nested rows and columns draw too
        def _child(self, *args, **kwargs):
            return self

        row = column = box = _child

    bpy = addon.bpy
    _import(bpy, splat_bundle)
    layout = Recorder(bpy)
    addon.module("ui.panel")._draw_splats(bpy.context, layout)
    assert layout.calls == [("prop", "exclude"), ("operator", "panst3r.render_view_engine")]


def test_quaternions_and_matrices_agree() -> None:
    """importers/convert.py's quaternion helpers (numpy only), including rotations by about 180 degrees."""
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(50, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[:3] = [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0.6, 0, 0.8]]  # trace -1: the branches without w
    matrices = convert.quaternion_to_matrix(quats)
    back = np.stack([convert.matrix_to_quaternion(m) for m in matrices])
    np.testing.assert_allclose(back, quats * np.where(quats[:, :1] < 0, -1, 1), atol=1e-12)
    products = convert.quaternion_to_matrix(convert.quaternion_multiply(quats[:-1], quats[1:]))
    np.testing.assert_allclose(products, matrices[:-1] @ matrices[1:], atol=1e-12)
