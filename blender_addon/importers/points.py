"""Point objects: one vertex-only mesh per segment, shown as points by a shared Geometry Nodes group.

Vertices go in through the mesh's ``position`` attribute with float32
``foreach_set`` (the fastest route in bpy 5.0: ~4 ms per million points, see
benchmarks/bench_import.py), together with the point attributes ``rgb``
(FLOAT_COLOR, scene-linear), ``conf`` (FLOAT), ``segment`` and ``class`` (INT).
The "PanSt3R Points" group turns the mesh into a point cloud (Mesh to Points,
with the radius and a confidence cut as modifier inputs) and sets the class
material, so it renders in Cycles and EEVEE and keeps the class colour in Solid
mode. Editing stays cheap: the mesh is the data, the points are derived.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .nodes import input_identifier, set_group_input, shared_node_group

POINTS_GROUP = "PanSt3R Points"
MODIFIER = "PanSt3R Points"
RADIUS, MIN_CONF, MATERIAL = "Radius", "Min Confidence", "Material"


@dataclass
class PointSet:
    """The points of one object, already in Blender coordinates (all arrays C-contiguous)."""

    xyz: np.ndarray  # float32 [n, 3]
    rgba: np.ndarray  # float32 [n, 4] scene-linear
    conf: np.ndarray  # float32 [n]
    segment: np.ndarray  # int32 [n] segment id per point
    class_id: np.ndarray  # int32 [n] class id per point, -1 for unlabelled points


@dataclass
class PointObject:
    """What one points object is made of."""

    name: str
    points: PointSet
    collection: bpy.types.Collection
    material: bpy.types.Material


def _build_points_group(group: bpy.types.GeometryNodeTree) -> None:
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    radius = iface.new_socket(RADIUS, in_out="INPUT", socket_type="NodeSocketFloat")
    radius.default_value, radius.min_value = 0.01, 0.0
    radius.description = "Radius of every point, in scene units"
    conf = iface.new_socket(MIN_CONF, in_out="INPUT", socket_type="NodeSocketFloat")
    conf.default_value, conf.min_value = 0.0, 0.0
    conf.description = "Hide points whose confidence is below this value"
    iface.new_socket(MATERIAL, in_out="INPUT", socket_type="NodeSocketMaterial")
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    attribute = nodes.new("GeometryNodeInputNamedAttribute")
    attribute.data_type = "FLOAT"
    attribute.inputs["Name"].default_value = "conf"
    keep = nodes.new("FunctionNodeCompare")
    keep.data_type, keep.operation = "FLOAT", "GREATER_EQUAL"
    links.new(attribute.outputs["Attribute"], keep.inputs["A"])
    links.new(group_in.outputs[MIN_CONF], keep.inputs["B"])
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(keep.outputs["Result"], to_points.inputs["Selection"])
    links.new(group_in.outputs[RADIUS], to_points.inputs["Radius"])
    set_material = nodes.new("GeometryNodeSetMaterial")
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(group_in.outputs[MATERIAL], set_material.inputs["Material"])
    links.new(set_material.outputs["Geometry"], group_out.inputs["Geometry"])
    for x, node in enumerate((group_in, attribute, keep, to_points, set_material, group_out)):
        node.location = (x * 200.0, 0.0)


def points_group() -> bpy.types.GeometryNodeTree:
    """The shared display group, created on first use."""
    return shared_node_group(POINTS_GROUP, _build_points_group)


def set_modifier_input(ob: bpy.types.Object, name: str, value) -> bool:
    """Set one input ("Radius", "Min Confidence", "Material") of an object's points modifier."""
    return set_group_input(ob, MODIFIER, name, value)


def write_mesh(name: str, points: PointSet) -> bpy.types.Mesh:
    """A vertex-only mesh holding the points and their attributes (float32/int32 foreach_set).

    No ``mesh.update()``: a new mesh is already tagged for evaluation, and a vertex-only mesh has no edges or
    faces to recompute (it cost a call per object).
    """
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(points.xyz))
    attributes = mesh.attributes
    attributes["position"].data.foreach_set("vector", points.xyz.ravel())
    attributes.new("rgb", "FLOAT_COLOR", "POINT").data.foreach_set("color", points.rgba.ravel())
    attributes.new("conf", "FLOAT", "POINT").data.foreach_set("value", points.conf)
    attributes.new("segment", "INT", "POINT").data.foreach_set("value", points.segment)
    attributes.new("class", "INT", "POINT").data.foreach_set("value", points.class_id)
    return mesh


def create_objects(items: list[PointObject], radius: float, min_conf: float = 0.0) -> list[bpy.types.Object]:
    """Points objects (mesh + "PanSt3R Points" modifier), one per item and in its order, linked into their
    collections.

    Linear in the number of objects, because of two orders: every mesh gets its material before any object
    uses it (appending a material to a mesh visits every object of the file), and IDs are created in name
    order (Blender keeps each ID list sorted by name, and inserting a name that sorts last is immediate,
    where an arbitrary order scans the list).
    """
    group = points_group()
    keys = {name: input_identifier(group, name) for name in (RADIUS, MIN_CONF, MATERIAL)}
    defaults = {item.name: item.default_value for item in group.interface.items_tree if item.name in keys}
    # the inputs start at the group's defaults: only those that differ are written, once per object
    inputs = {
        keys[name]: float(value)
        for name, value in ((RADIUS, radius), (MIN_CONF, min_conf))
        if np.float32(value) != np.float32(defaults[name])
    }
    material_key = keys[MATERIAL]
    order = sorted(range(len(items)), key=lambda i: items[i].name)
    meshes = {}
    for i in order:
        mesh = meshes[i] = write_mesh(items[i].name, items[i].points)
        mesh.materials.append(items[i].material)
    objects: list = [None] * len(items)
    new_object = bpy.data.objects.new
    for i in order:
        item = items[i]
        ob = objects[i] = new_object(item.name, meshes[i])
        item.collection.objects.link(ob)
        modifier = ob.modifiers.new(MODIFIER, "NODES")
        modifier.node_group = group
        for key, value in inputs.items():
            modifier[key] = value
        modifier[material_key] = item.material
    return objects


def split_by_segment(segment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group points by segment id.

    Args:
        segment: int32 [N] segment id per point (0 = unlabelled).
    Returns:
        order int64 [N] (a stable sort by segment), ids int [K] the segments present, starts int [K + 1]
        such that points ``order[starts[k]:starts[k + 1]]`` belong to ``ids[k]``.
    """
    segment = np.asarray(segment)
    if segment.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64)
    keys = segment
    if segment.min() >= 0 and segment.max() <= np.iinfo(np.uint16).max:
        keys = segment.astype(np.uint16)  # numpy's stable sort of 16-bit keys is a radix sort, ~4x faster
    order = np.argsort(keys, kind="stable")
    grouped = segment[order]
    starts = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1  # already sorted: no second sort (np.unique)
    starts = np.concatenate(([0], starts, [segment.size])).astype(np.int64)
    return order, grouped[starts[:-1]].astype(np.int64), starts
