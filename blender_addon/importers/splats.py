"""The optional Gaussian splats of a bundle, shown as coloured points sized by each Gaussian's scale.

An approximation for reviewing the splat layer inside Blender (no anisotropy,
no view-dependent colour): one vertex-only mesh "splats" in a "Splats"
collection, displayed by the same "PanSt3R Points" group with its radius read
from the ``radius`` attribute, and an emission material whose opacity follows
the Gaussians'. Its collection starts hidden so it does not cover the segments.
"""

from __future__ import annotations

import bpy
import numpy as np

from .convert import WorldTransform, linear_rgba
from .points import MATERIAL, MIN_CONF, RADIUS, _identifier, points_group

SPLATS_MATERIAL = "PanSt3R splats"
MODIFIER = "PanSt3R Splats"


def splats_material() -> bpy.types.Material:
    """Emission in the splat colour, mixed with transparency by the splat opacity."""
    material = bpy.data.materials.get(SPLATS_MATERIAL)
    if material is not None:
        return material
    material = bpy.data.materials.new(SPLATS_MATERIAL)
    material.diffuse_color = (0.6, 0.6, 0.6, 1.0)
    if material.node_tree is None:  # Blender 4.x
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    color, opacity = nodes.new("ShaderNodeAttribute"), nodes.new("ShaderNodeAttribute")
    color.attribute_name, opacity.attribute_name = "rgb", "opacity"
    emission, clear = nodes.new("ShaderNodeEmission"), nodes.new("ShaderNodeBsdfTransparent")
    mix, output = nodes.new("ShaderNodeMixShader"), nodes.new("ShaderNodeOutputMaterial")
    links.new(color.outputs["Color"], emission.inputs["Color"])
    links.new(opacity.outputs["Fac"], mix.inputs[0])
    links.new(clear.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], output.inputs["Surface"])
    return material


def create_splats(splats: dict[str, np.ndarray], transform: WorldTransform,
                  collection: bpy.types.Collection) -> bpy.types.Object:
    """The splats object in collection; ``splats`` as returned by ``bundle.splats.read_splats``."""
    count = len(splats["xyz"])
    mesh = bpy.data.meshes.new("splats")
    mesh.vertices.add(count)
    mesh.attributes["position"].data.foreach_set("vector", transform.points(splats["xyz"]).ravel())
    rgb8 = np.round(splats["rgb"] * 255.0).astype(np.uint8)
    mesh.attributes.new("rgb", "FLOAT_COLOR", "POINT").data.foreach_set("color", linear_rgba(rgb8).ravel())
    for name, kind, values in (("opacity", "FLOAT", splats["opacity"]),
                               ("radius", "FLOAT", splats["radius"] * np.float32(transform.scale)),
                               ("segment", "INT", splats["segment"]), ("class", "INT", splats["class"])):
        mesh.attributes.new(name, kind, "POINT").data.foreach_set("value", np.ascontiguousarray(values))
    mesh.update()
    material = splats_material()
    mesh.materials.append(material)
    ob = bpy.data.objects.new("splats", mesh)
    collection.objects.link(ob)
    group = points_group()
    modifier = ob.modifiers.new(MODIFIER, "NODES")
    modifier.node_group = group
    radius = _identifier(group, RADIUS)
    modifier[f"{radius}_use_attribute"] = True
    modifier[f"{radius}_attribute_name"] = "radius"
    modifier[_identifier(group, MIN_CONF)] = 0.0
    modifier[_identifier(group, MATERIAL)] = material
    ob["splat_count"] = count
    return ob
