"""The splat layer: a bundle's Gaussians as instanced ellipsoids, in an excluded "Splats" collection.

One vertex-only mesh "splats" holds a vertex per Gaussian (Blender world) with
the point attributes ``scale`` (FLOAT_VECTOR, standard deviations times the
import scale), ``rotation`` (QUATERNION, w x y z), ``opacity`` (FLOAT, 0-1),
``color`` (FLOAT_COLOR, scene-linear DC colour, alpha = opacity), ``segment`` and
``class`` (INT), and for the label colour modes ``class_color`` and
``segment_color`` (FLOAT_COLOR, the manifest colours). The "PanSt3R Splats"
Geometry Nodes group puts an ico-sphere on every vertex, rotated and scaled by
the attributes times a "Size" in standard deviations (3: the tails are drawn),
optionally realized. The material reads the attributes of the instancer (or of
the realized mesh), picks photo / class / segment colour through the shared
"PanSt3R Display" switch (the panel's Colour setting drives points and splats
alike) and mixes emission with transparency by opacity times a Gaussian falloff,
exp(-d^2/2) with d the Mahalanobis distance of the view ray from the centre, so
an ellipsoid's front face draws the splat a rasteriser would (back faces clear;
EEVEE: blended). The collection starts excluded from the view layer (hidden in
viewport and render, and not evaluated); its layer's ``exclude`` is the one toggle.

Still approximate: no view-dependent colour, and Blender blends in linear light
where the engine blends sRGB values. The engine renders the splats exactly
(``render_view``).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..bundle.read import BundleData
from ..bundle.splats import read_splats
from .convert import WorldTransform, linear_rgba, srgb_to_linear
from .materials import display_group
from .nodes import input_identifier, set_group_input

SPLATS_FILE = "splats.ply"
SPLATS_GROUP = "PanSt3R Splats"
SPLATS_MATERIAL = "PanSt3R splats"
MODIFIER = "PanSt3R Splats"
COLLECTION = "Splats"
LAYER_PROPERTY = "panst3r_splats"  # marks a splat collection (its name may get a .001 suffix)
SIZE, MIN_OPACITY, REALIZE, MATERIAL = "Size", "Min Opacity", "Realize Instances", "Material"
DEFAULT_SIZE = 3.0  # ellipsoid semi-axes in standard deviations: the falloff is drawn out to exp(-4.5) = 1 %
SUBDIVISIONS = 2  # of the ico-sphere (42 vertices: every face is at least 2.8 sigma out at Size 3)
LOCAL = "splat_local"  # sphere vertex attribute: its offset from the centre in standard deviations
AXES = ("splat_axis_x", "splat_axis_y", "splat_axis_z")  # realized only: the frame's axes / sigma
# realized only: "color" under another name. Cycles reads a realized mesh's "color" as 0, and an instancer
# "color" there as the object's colour (white)
REALIZED_COLOR = "splat_photo"
FALLOFF_NODE = "Gaussian Falloff"  # multiplies d^2 by -1/2 (0 turns the falloff off: solid ellipsoids)
LOOK_PROPERTY, LOOK_VERSION = "panst3r_splat_look", 2  # groups and materials of an older look are not reused
UNLABELLED_COLOR = (150, 150, 150)


# ---------------------------------------------------------------- geometry nodes
def _new_input(group, name: str, socket_type: str, default=None, description: str = "", minimum=None):
    socket = group.interface.new_socket(name, in_out="INPUT", socket_type=socket_type)
    if default is not None:
        socket.default_value = default
    if minimum is not None:
        socket.min_value = minimum
    socket.description = description
    return socket


def _named(nodes, data_type: str, name: str):
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    return node.outputs["Attribute"]


def _realized_axes(nodes, links, instances):
    """Store the Gaussian frame's axes over their standard deviations (``AXES``) on the instances, so the
    material can find the view direction in the Gaussian's frame once instances are realized (it then has no
    instance transform to undo), and the photo colour as ``REALIZED_COLOR``."""
    scale = nodes.new("ShaderNodeSeparateXYZ")
    links.new(_named(nodes, "FLOAT_VECTOR", "scale"), scale.inputs["Vector"])
    rotation = _named(nodes, "QUATERNION", "rotation")
    geometry = instances
    for index, (name, axis) in enumerate(zip(AXES, "XYZ")):
        rotate, divide = nodes.new("FunctionNodeRotateVector"), nodes.new("ShaderNodeVectorMath")
        rotate.inputs["Vector"].default_value = [float(i == index) for i in range(3)]
        links.new(rotation, rotate.inputs["Rotation"])
        inverse = nodes.new("ShaderNodeMath")
        inverse.operation, inverse.inputs[0].default_value = "DIVIDE", 1.0
        links.new(scale.outputs[axis], inverse.inputs[1])
        divide.operation = "SCALE"
        links.new(rotate.outputs["Vector"], divide.inputs[0])
        links.new(inverse.outputs[0], divide.inputs["Scale"])
        store = nodes.new("GeometryNodeStoreNamedAttribute")
        store.data_type, store.domain = "FLOAT_VECTOR", "INSTANCE"
        store.inputs["Name"].default_value = name
        links.new(geometry, store.inputs["Geometry"])
        links.new(divide.outputs["Vector"], store.inputs["Value"])
        geometry = store.outputs["Geometry"]
    store = nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain = "FLOAT_COLOR", "INSTANCE"
    store.inputs["Name"].default_value = REALIZED_COLOR
    links.new(geometry, store.inputs["Geometry"])
    links.new(_named(nodes, "FLOAT_COLOR", "color"), store.inputs["Value"])
    return store.outputs["Geometry"]


def _build_splats_group(group: bpy.types.GeometryNodeTree) -> None:
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    _new_input(group, SIZE, "NodeSocketFloat", DEFAULT_SIZE, "Ellipsoid semi-axes in standard deviations", 0.0)
    _new_input(group, MIN_OPACITY, "NodeSocketFloat", 0.0, "Leave out Gaussians less opaque than this", 0.0)
    _new_input(
        group,
        REALIZE,
        "NodeSocketBool",
        False,
        "Make real geometry of the ellipsoids (slower, more memory; needed by some exporters)",
    )
    _new_input(group, MATERIAL, "NodeSocketMaterial")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    group[LOOK_PROPERTY] = LOOK_VERSION
    nodes, links = group.nodes, group.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    keep = nodes.new("FunctionNodeCompare")
    keep.data_type, keep.operation = "FLOAT", "GREATER_EQUAL"
    links.new(_named(nodes, "FLOAT", "opacity"), keep.inputs["A"])
    links.new(group_in.outputs[MIN_OPACITY], keep.inputs["B"])
    sphere = nodes.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value, sphere.inputs["Subdivisions"].default_value = 1.0, SUBDIVISIONS
    # every vertex of the unit sphere carries its position in standard deviations: interpolated over a face,
    # it is the shading point's offset from the centre in the Gaussian's own (whitened) frame
    local, whitened = nodes.new("GeometryNodeStoreNamedAttribute"), nodes.new("ShaderNodeVectorMath")
    local.data_type, local.domain = "FLOAT_VECTOR", "POINT"
    local.inputs["Name"].default_value = LOCAL
    whitened.operation = "SCALE"
    links.new(nodes.new("GeometryNodeInputPosition").outputs["Position"], whitened.inputs[0])
    links.new(group_in.outputs[SIZE], whitened.inputs["Scale"])
    links.new(sphere.outputs["Mesh"], local.inputs["Geometry"])
    links.new(whitened.outputs["Vector"], local.inputs["Value"])
    set_material = nodes.new("GeometryNodeSetMaterial")
    links.new(local.outputs["Geometry"], set_material.inputs["Geometry"])
    links.new(group_in.outputs[MATERIAL], set_material.inputs["Material"])
    size = nodes.new("ShaderNodeVectorMath")
    size.operation = "SCALE"
    links.new(_named(nodes, "FLOAT_VECTOR", "scale"), size.inputs[0])
    links.new(group_in.outputs[SIZE], size.inputs["Scale"])
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(group_in.outputs["Geometry"], instance.inputs["Points"])
    links.new(keep.outputs["Result"], instance.inputs["Selection"])
    links.new(set_material.outputs["Geometry"], instance.inputs["Instance"])
    links.new(_named(nodes, "QUATERNION", "rotation"), instance.inputs["Rotation"])
    links.new(size.outputs["Vector"], instance.inputs["Scale"])
    realize, switch = nodes.new("GeometryNodeRealizeInstances"), nodes.new("GeometryNodeSwitch")
    switch.input_type = "GEOMETRY"
    links.new(_realized_axes(nodes, links, instance.outputs["Instances"]), realize.inputs["Geometry"])
    links.new(group_in.outputs[REALIZE], switch.inputs["Switch"])
    links.new(instance.outputs["Instances"], switch.inputs["False"])
    links.new(realize.outputs["Geometry"], switch.inputs["True"])
    links.new(switch.outputs["Output"], group_out.inputs["Geometry"])
    for x, node in enumerate((group_in, sphere, local, set_material, instance, realize, switch, group_out)):
        node.location = (x * 220.0, 0.0)


def _current(collection, kind: str):
    """The first data-block of collection made by this version of the look (older files keep theirs)."""
    return next((b for b in collection if b.bl_rna.identifier == kind and b.get(LOOK_PROPERTY) == LOOK_VERSION), None)


def splats_group() -> bpy.types.GeometryNodeTree:
    """The shared splat display group, created on first use."""
    group = _current(bpy.data.node_groups, "GeometryNodeTree")
    if group is None:
        group = bpy.data.node_groups.new(SPLATS_GROUP, "GeometryNodeTree")
        _build_splats_group(group)
    return group


def set_splats_input(ob: bpy.types.Object, name: str, value) -> bool:
    """Set one input ("Size", "Min Opacity", "Realize Instances", "Material") of a splats modifier."""
    return set_group_input(ob, MODIFIER, name, value)


# ---------------------------------------------------------------- material
def _attribute(nodes, links, name: str, output: str):
    """The attribute of the instancer plus that of the geometry: one is 0, so this reads instanced
    ellipsoids and realized ones alike (not "color": see ``REALIZED_COLOR``)."""
    reads = []
    for kind in ("INSTANCER", "GEOMETRY"):
        node = nodes.new("ShaderNodeAttribute")
        node.attribute_type, node.attribute_name = kind, name
        reads.append(node.outputs[output])
    add = nodes.new("ShaderNodeVectorMath" if output == "Color" else "ShaderNodeMath")
    add.operation = "ADD"
    links.new(reads[0], add.inputs[0])
    links.new(reads[1], add.inputs[1])
    return add.outputs[0]


def _set_blended(material: bpy.types.Material) -> None:
    """Alpha-blended transparency in EEVEE (Cycles needs no setting)."""
    if hasattr(material, "surface_render_method"):  # EEVEE Next, 4.2+
        material.surface_render_method = "BLENDED"
    else:
        material.blend_method = "BLEND"
    for name in ("use_transparency_overlap", "show_transparent_back"):
        if hasattr(material, name):
            setattr(material, name, False)
            break


def _vector_math(nodes, links, operation: str, *inputs):
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = operation
    for socket, value in zip(node.inputs, inputs):
        links.new(value, socket)
    return node.outputs["Value" if operation in ("DOT_PRODUCT", "LENGTH") else "Vector"]


def _mix(nodes, links, data_type: str, factor, a, b):
    """A Mix node of "VECTOR" or "RGBA" (its sockets are picked by identifier: names repeat across types)."""
    node = nodes.new("ShaderNodeMix")
    node.data_type = data_type
    suffix = "_Vector" if data_type == "VECTOR" else "_Color"
    sockets = {socket.identifier: socket for socket in (*node.inputs, *node.outputs)}
    links.new(factor, sockets["Factor_Float"])
    links.new(a, sockets["A" + suffix])
    links.new(b, sockets["B" + suffix])
    return sockets["Result" + suffix]


def _math(nodes, links, operation: str, a, b):
    """A float Math node; a and b are sockets or constants."""
    node = nodes.new("ShaderNodeMath")
    node.operation = operation
    for socket, value in zip(node.inputs, (a, b)):
        if isinstance(value, float):
            socket.default_value = value
        else:
            links.new(value, socket)
    return node.outputs[0]


def _gaussian_falloff(nodes, links, geometry):
    """(exp(-d^2 / 2), 1 on realized ellipsoids else 0), d the Mahalanobis distance from the Gaussian's
    centre to the view ray through the shading point. Along a ray a 3D Gaussian peaks at exp(-d^2 / 2), and
    its integral along the ray is that peak times a constant: the 2D Gaussian a splat rasteriser draws is this
    falloff (Zwicker et al. 2001, "EWA Volume Splatting"; exact for orthographic views).

    In the Gaussian's whitened frame (the unit sphere of the instance) the ray's distance to the centre is
    |p x w| for the shading point p and the unit ray direction w. An instance's object space is that frame
    up to the Size factor, which ``LOCAL`` already carries; realized ellipsoids have no instance transform, so
    the view direction goes through the stored axes instead (``AXES``, zero on instances).
    """
    local = nodes.new("ShaderNodeAttribute")
    local.attribute_type, local.attribute_name = "GEOMETRY", LOCAL
    to_object = nodes.new("ShaderNodeVectorTransform")
    to_object.vector_type, to_object.convert_from, to_object.convert_to = "VECTOR", "WORLD", "OBJECT"
    links.new(geometry.outputs["Incoming"], to_object.inputs["Vector"])
    direction = to_object.outputs["Vector"]
    axes = []
    for name in AXES:
        axis = nodes.new("ShaderNodeAttribute")
        axis.attribute_type, axis.attribute_name = "GEOMETRY", name
        axes.append(_vector_math(nodes, links, "DOT_PRODUCT", axis.outputs["Vector"], direction))
    realized = nodes.new("ShaderNodeCombineXYZ")
    for socket, value in zip(realized.inputs, axes):
        links.new(value, socket)
    is_realized = _math(nodes, links, "GREATER_THAN", _vector_math(nodes, links, "LENGTH", realized.outputs[0]), 0.0)
    picked = _mix(nodes, links, "VECTOR", is_realized, direction, realized.outputs[0])
    unit = _vector_math(nodes, links, "NORMALIZE", picked)
    offset = _vector_math(nodes, links, "CROSS_PRODUCT", local.outputs["Vector"], unit)
    squared = _vector_math(nodes, links, "DOT_PRODUCT", offset, offset)
    exponent = _math(nodes, links, "MULTIPLY", squared, -0.5)
    exponent.node.name = FALLOFF_NODE
    gaussian = _math(nodes, links, "EXPONENT", exponent, 0.0)
    return gaussian, is_realized


def splats_material() -> bpy.types.Material:
    """Emission in the display colour, mixed with transparency by opacity times the Gaussian falloff (back
    faces clear: each ellipsoid is one layer)."""
    material = _current(bpy.data.materials, "Material")
    if material is not None and material.node_tree is not None and "Display" in material.node_tree.nodes:
        return material
    material = bpy.data.materials.new(SPLATS_MATERIAL)
    material[LOOK_PROPERTY] = LOOK_VERSION
    material.diffuse_color = (0.6, 0.6, 0.6, 1.0)
    if material.node_tree is None:  # Blender 4.x; 5.0 materials always have nodes
        material.use_nodes = True
    _set_blended(material)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    geometry = nodes.new("ShaderNodeNewGeometry")
    gaussian, is_realized = _gaussian_falloff(nodes, links, geometry)
    switch = nodes.new("ShaderNodeGroup")
    switch.name, switch.node_tree = "Display", display_group()
    for socket, attribute in (("Semantic", "class_color"), ("Instance", "segment_color")):
        links.new(_attribute(nodes, links, attribute, "Color"), switch.inputs[socket])
    realized_color = nodes.new("ShaderNodeAttribute")
    realized_color.attribute_type, realized_color.attribute_name = "GEOMETRY", REALIZED_COLOR
    photo = _mix(
        nodes, links, "RGBA", is_realized, _attribute(nodes, links, "color", "Color"), realized_color.outputs["Color"]
    )
    links.new(photo, switch.inputs["Photo"])
    emission = nodes.new("ShaderNodeEmission")
    links.new(switch.outputs["Color"], emission.inputs["Color"])
    front = _math(nodes, links, "SUBTRACT", 1.0, geometry.outputs["Backfacing"])
    weight = _math(nodes, links, "MULTIPLY", _attribute(nodes, links, "opacity", "Fac"), front)
    factor = _math(nodes, links, "MULTIPLY", weight, gaussian)
    clear, mix = nodes.new("ShaderNodeBsdfTransparent"), nodes.new("ShaderNodeMixShader")
    mix.name = "Opacity"
    links.new(factor, mix.inputs["Fac"])
    links.new(clear.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(mix.outputs[0], output.inputs["Surface"])
    for x, node in enumerate((switch, emission, mix, output)):
        node.location = (400.0 + x * 220.0, 0.0)
    return material


# ---------------------------------------------------------------- object and layer
def _label_colors(ids: np.ndarray, colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """float32 [N, 4] scene-linear colours of label ids (unknown ids grey)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    palette = np.array([colors.get(int(i), UNLABELLED_COLOR) for i in uniq], np.uint8).reshape(-1, 3)
    return np.ascontiguousarray(linear_rgba(palette)[inverse.ravel()])


def write_splats_mesh(
    splats: dict[str, np.ndarray],
    transform: WorldTransform,
    segment_colors: dict[int, tuple],
    class_colors: dict[int, tuple],
) -> bpy.types.Mesh:
    """A vertex-only mesh with the Gaussians' attributes, in Blender world (float32/int32 ``foreach_set``)."""
    count = len(splats["xyz"])
    mesh = bpy.data.meshes.new("splats")
    mesh.vertices.add(count)
    color = np.empty((count, 4), np.float32)
    color[:, :3], color[:, 3] = srgb_to_linear(splats["rgb"]), splats["opacity"]
    vectors = {
        "position": transform.points(splats["xyz"]),
        "scale": (splats["scale"] * np.float32(transform.scale)).astype(np.float32),
        "rotation": transform.quaternions(splats["rotation"]),
    }
    mesh.attributes["position"].data.foreach_set("vector", vectors.pop("position").ravel())
    mesh.attributes.new("scale", "FLOAT_VECTOR", "POINT").data.foreach_set("vector", vectors["scale"].ravel())
    mesh.attributes.new("rotation", "QUATERNION", "POINT").data.foreach_set(
        "value", np.ascontiguousarray(vectors["rotation"]).ravel()
    )
    for name, values in (
        ("color", color),
        ("segment_color", _label_colors(splats["segment"], segment_colors)),
        ("class_color", _label_colors(splats["class"], class_colors)),
    ):
        mesh.attributes.new(name, "FLOAT_COLOR", "POINT").data.foreach_set("color", values.ravel())
    for name, kind, values in (
        ("opacity", "FLOAT", splats["opacity"]),
        ("segment", "INT", splats["segment"]),
        ("class", "INT", splats["class"]),
    ):
        mesh.attributes.new(name, kind, "POINT").data.foreach_set("value", np.ascontiguousarray(values))
    mesh.update()
    return mesh


def create_splats(
    splats: dict[str, np.ndarray],
    transform: WorldTransform,
    collection: bpy.types.Collection,
    segment_colors: dict[int, tuple] | None = None,
    class_colors: dict[int, tuple] | None = None,
) -> bpy.types.Object:
    """The splats object (mesh + "PanSt3R Splats" modifier) in collection.

    Args:
        splats: as returned by ``bundle.splats.read_splats`` (engine world).
        segment_colors, class_colors: id -> sRGB 0..255 colour for the label colour modes.
    """
    mesh = write_splats_mesh(splats, transform, segment_colors or {}, class_colors or {})
    material = splats_material()
    mesh.materials.append(material)
    ob = bpy.data.objects.new("splats", mesh)
    collection.objects.link(ob)
    group = splats_group()
    modifier = ob.modifiers.new(MODIFIER, "NODES")
    modifier.node_group = group
    modifier[input_identifier(group, MATERIAL)] = material
    ob["splat_count"] = len(splats["xyz"])
    return ob


def layer_collection(view_layer, collection: bpy.types.Collection):
    """The view layer's entry of a collection (its exclude checkbox), searched depth first."""
    stack = [view_layer.layer_collection]
    while stack:
        layer = stack.pop()
        if layer.collection == collection:
            return layer
        stack.extend(layer.children)
    return None


def splat_layers(context) -> list:
    """(collection, layer collection) of every splat layer in the view layer, in outliner order."""
    found, stack = [], [context.view_layer.layer_collection]
    while stack:
        layer = stack.pop(0)
        if layer.collection.get(LAYER_PROPERTY):
            found.append((layer.collection, layer))
        stack[:0] = list(layer.children)
    return found


def set_splats_visible(context, visible: bool, collection: bpy.types.Collection | None = None) -> int:
    """Show or hide (viewport and render) one splat layer, or all of them; returns how many changed."""
    changed = 0
    for coll, layer in splat_layers(context):
        if collection is None or coll == collection:
            layer.exclude = not visible
            changed += 1
    return changed


def create_splat_layer(
    context, data: BundleData, transform: WorldTransform, root: bpy.types.Collection
) -> bpy.types.Object | None:
    """The bundle's splats.ply (if any) as the "splats" object of a new, excluded "Splats" collection in root."""
    path = Path(data.path) / SPLATS_FILE
    if not path.is_file():
        return None
    collection = bpy.data.collections.new(COLLECTION)
    collection[LAYER_PROPERTY] = 1
    root.children.link(collection)
    ob = create_splats(
        read_splats(path),
        transform,
        collection,
        {s.id: s.color for s in data.segments},
        {c.id: c.color for c in data.classes.values()},
    )
    layer = layer_collection(context.view_layer, collection)
    if layer is not None:
        layer.exclude = True  # hidden in viewport and render, and not evaluated until shown
    return ob
