"""One material per class, with a shared semantic / instance / photo colour switch.

Every class material feeds three colours into the shared shader group
"PanSt3R Display": the class colour (an RGB node), the instance colour (Object
Info > Color, set per object) and the photo colour (the ``rgb`` point attribute
through an Attribute node). A Value node named "Mode" inside the group picks
one (0 semantic, 1 instance, 2 photo), so one change recolours every imported
result in Rendered and Material Preview modes. ``diffuse_color`` carries the
class colour for Solid mode, which cannot show per-point attributes.
"""

from __future__ import annotations

import bpy

from .convert import linear_color

DISPLAY_GROUP = "PanSt3R Display"
MODE_NODE = "Mode"
DISPLAY_MODES = ("SEMANTIC", "INSTANCE", "PHOTO")
COLOR_ATTRIBUTE = "rgb"
CLASS_PROPERTY = "panst3r_class"
CLASS_COLOR_NODE = "Class Colour"


def _socket(sockets, identifier: str):
    """A node socket by identifier (names repeat across the Mix node's data types)."""
    return next(s for s in sockets if s.identifier == identifier)


def _mix(nodes, links, factor, color_a, color_b):
    """A colour Mix node: returns its Result socket."""
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    links.new(factor, _socket(mix.inputs, "Factor_Float"))
    links.new(color_a, _socket(mix.inputs, "A_Color"))
    links.new(color_b, _socket(mix.inputs, "B_Color"))
    return _socket(mix.outputs, "Result_Color")


def _build_display_group(group: bpy.types.ShaderNodeTree) -> None:
    for name in ("Semantic", "Instance", "Photo"):
        group.interface.new_socket(name, in_out="INPUT", socket_type="NodeSocketColor")
    group.interface.new_socket("Color", in_out="OUTPUT", socket_type="NodeSocketColor")
    nodes, links = group.nodes, group.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    mode = nodes.new("ShaderNodeValue")
    mode.name, mode.label = MODE_NODE, "Display Mode (0 semantic, 1 instance, 2 photo)"
    above = []
    for threshold in (0.5, 1.5):
        compare = nodes.new("ShaderNodeMath")
        compare.operation = "GREATER_THAN"
        links.new(mode.outputs[0], compare.inputs[0])
        compare.inputs[1].default_value = threshold
        above.append(compare.outputs[0])
    first = _mix(nodes, links, above[0], group_in.outputs["Semantic"], group_in.outputs["Instance"])
    links.new(_mix(nodes, links, above[1], first, group_in.outputs["Photo"]), group_out.inputs["Color"])


def display_group() -> bpy.types.ShaderNodeTree:
    """The shared colour switch, created on first use."""
    group = bpy.data.node_groups.get(DISPLAY_GROUP)
    if group is None or group.bl_idname != "ShaderNodeTree" or MODE_NODE not in group.nodes:
        group = bpy.data.node_groups.new(DISPLAY_GROUP, "ShaderNodeTree")
        _build_display_group(group)
    return group


def set_display_mode(mode: str) -> None:
    """Show class ('SEMANTIC'), instance ('INSTANCE') or photo ('PHOTO') colours in every result."""
    display_group().nodes[MODE_NODE].outputs[0].default_value = float(DISPLAY_MODES.index(mode))


def display_mode() -> str:
    group = bpy.data.node_groups.get(DISPLAY_GROUP)
    if group is None or MODE_NODE not in group.nodes:
        return DISPLAY_MODES[0]
    value = round(group.nodes[MODE_NODE].outputs[0].default_value)
    return DISPLAY_MODES[min(max(value, 0), len(DISPLAY_MODES) - 1)]


def _build_material(material: bpy.types.Material, rgba: tuple[float, ...]) -> None:
    if material.node_tree is None:  # Blender 4.x; 5.0 materials always have nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    semantic = nodes.new("ShaderNodeRGB")
    semantic.name = semantic.label = CLASS_COLOR_NODE
    semantic.outputs[0].default_value = rgba
    info = nodes.new("ShaderNodeObjectInfo")
    photo = nodes.new("ShaderNodeAttribute")
    photo.attribute_type, photo.attribute_name = "GEOMETRY", COLOR_ATTRIBUTE
    switch = nodes.new("ShaderNodeGroup")
    switch.node_tree = display_group()
    links.new(semantic.outputs[0], switch.inputs["Semantic"])
    links.new(info.outputs["Color"], switch.inputs["Instance"])
    links.new(photo.outputs["Color"], switch.inputs["Photo"])
    emission = nodes.new("ShaderNodeEmission")
    links.new(switch.outputs["Color"], emission.inputs["Color"])
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(emission.outputs[0], output.inputs["Surface"])
    for x, node in enumerate((semantic, info, photo, switch, emission, output)):
        node.location = (x * 220.0, 0.0) if x > 2 else (0.0, -x * 220.0)


def class_material(class_name: str, color: tuple[int, int, int]) -> bpy.types.Material:
    """The material of a class in its colour (reused when one with the same name and colour exists)."""
    rgba = linear_color(color)
    name = f"PanSt3R {class_name}"
    material = bpy.data.materials.get(name)
    if (
        material is not None
        and material.get(CLASS_PROPERTY) == class_name
        and all(abs(a - b) < 1e-4 for a, b in zip(material.diffuse_color, rgba))
    ):
        return material
    material = bpy.data.materials.new(name)
    material[CLASS_PROPERTY] = class_name
    material.diffuse_color = rgba
    _build_material(material, rgba)
    return material
