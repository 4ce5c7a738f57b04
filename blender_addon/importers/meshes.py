"""Instance -> mesh asset: a surface around an instance's points, with the photo colours, as a plain mesh.

Only nodes that Blender 4.2 and 5.0 both ship (no new dependency): the shared
"PanSt3R Mesh" Geometry Nodes group runs Points to Volume (a sphere of
``radius`` round every point, on a grid of ``voxel`` size) -> Volume to Mesh
(OpenVDB's level-set mesher) -> a snap of every vertex along its normal onto the
plane of its nearest input point, blurred over the mesh so the surface stays
smooth (a union of spheres lies ``radius`` outside the points; the snap takes
that offset back) -> the ``rgb`` colour of the nearest input point. The
group runs on a temporary object and the evaluated result is copied into a new
mesh (``bpy.data.meshes.new_from_object``), so exporters and edit mode see an
ordinary mesh.

Sizes follow the data, so the default detail works at any scale: the point
spacing is the 75th percentile of nearest-neighbour distances over a sample
(``mathutils.kdtree``), the voxel is ``spacing / detail`` and the radius
``RADIUS_PER_SPACING`` spacings (enough to close the gaps between neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix, Vector

from . import RESULT_PROPERTY
from .materials import COLOR_ATTRIBUTE
from .nodes import input_identifier, shared_node_group

MESH_GROUP = "PanSt3R Mesh"
MESH_COLLECTION_PROPERTY = "panst3r_meshes"
SOURCE_PROPERTY = "mesh_source"
RADIUS, VOXEL, SNAP, SMOOTH = "Radius", "Voxel Size", "Snap", "Smooth"
RADIUS_PER_SPACING = 3.0  # 1.5 left a net of holes where points thin out (grazing views); same Chamfer
SNAP_FACTOR = 1.0  # how much of the offset to the nearest point's plane a vertex moves (1 = all of it)
SMOOTH_ITERATIONS = 3
MAX_VOXELS = 150_000_000  # bounding box / voxel size cubed; OpenVDB is sparse, this bounds the worst case
SPACING_SAMPLES = 2000


class MeshError(ValueError):
    """A problem with one instance, as a sentence the user can act on."""


@dataclass(frozen=True)
class MeshSizes:
    """Sizes of one instance's surface, in the object's local units."""

    spacing: float  # typical distance between neighbouring points
    voxel: float  # grid step of the volume and the mesh
    radius: float  # sphere round every point
    voxels: int  # bounding box (grown by the radius) / voxel cubed


def _new_node(nodes, kind: str, x: float, y: float = 0.0):
    node = nodes.new(kind)
    node.location = (x * 200.0, y * 200.0)
    return node


def _value(sockets):
    """The "Value" socket of a node's current data type: Blender 4.x keeps one hidden socket per type."""
    return next(s for s in sockets if s.name == "Value" and s.enabled)


def _set_voxel_size_mode(node) -> None:
    """Points to Volume by voxel size: a node property in Blender 4.x, a menu input since 5.0."""
    if hasattr(node, "resolution_mode"):
        node.resolution_mode = "VOXEL_SIZE"
    else:
        node.inputs["Resolution Mode"].default_value = "Size"


def _build_mesh_group(group: bpy.types.GeometryNodeTree) -> None:
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for name, default, description in (
        (RADIUS, 0.02, "Radius of the sphere round every point, in scene units"),
        (VOXEL, 0.01, "Grid step of the surface, in scene units"),
        (SNAP, SNAP_FACTOR, "How far vertices move onto the plane of their nearest point (0 = not at all)"),
    ):
        socket = iface.new_socket(name, in_out="INPUT", socket_type="NodeSocketFloat")
        socket.default_value, socket.min_value, socket.description = default, 0.0, description
    smooth = iface.new_socket(SMOOTH, in_out="INPUT", socket_type="NodeSocketInt")
    smooth.default_value, smooth.min_value = SMOOTH_ITERATIONS, 0
    smooth.description = "Blur iterations of the snap, so the surface stays smooth"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in, group_out = _new_node(nodes, "NodeGroupInput", 0), _new_node(nodes, "NodeGroupOutput", 12)
    to_points = _new_node(nodes, "GeometryNodeMeshToPoints", 1)
    to_points.mode = "VERTICES"
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    to_volume = _new_node(nodes, "GeometryNodePointsToVolume", 2)
    _set_voxel_size_mode(to_volume)
    links.new(to_points.outputs["Points"], to_volume.inputs["Points"])
    links.new(group_in.outputs[VOXEL], to_volume.inputs["Voxel Size"])
    links.new(group_in.outputs[RADIUS], to_volume.inputs["Radius"])
    to_mesh = _new_node(nodes, "GeometryNodeVolumeToMesh", 3)  # "Grid" resolution: the volume's own voxels
    links.new(to_volume.outputs["Volume"], to_mesh.inputs["Volume"])
    snapped = _snap(nodes, links, group_in, to_mesh.outputs["Mesh"])
    colored = _transfer_color(nodes, links, group_in.outputs["Geometry"], snapped)
    links.new(colored, group_out.inputs["Geometry"])


def _nearest(nodes, links, source, data_type: str, value, x: float, y: float):
    """The value of a source-vertex field at the vertex nearest to each evaluated position."""
    nearest = _new_node(nodes, "GeometryNodeSampleNearest", x, y)
    nearest.domain = "POINT"
    links.new(source, nearest.inputs["Geometry"])
    sample = _new_node(nodes, "GeometryNodeSampleIndex", x + 1, y)
    sample.data_type, sample.domain = data_type, "POINT"
    links.new(source, sample.inputs["Geometry"])
    links.new(value, _value(sample.inputs))
    links.new(nearest.outputs["Index"], sample.inputs["Index"])
    return _value(sample.outputs)


def _snap(nodes, links, group_in, mesh):
    """Move every vertex along its normal onto the plane through its nearest input point (blurred, scaled)."""
    position = _new_node(nodes, "GeometryNodeInputPosition", 3, -2)
    normal = _new_node(nodes, "GeometryNodeInputNormal", 3, -3)
    target = _nearest(nodes, links, group_in.outputs["Geometry"], "FLOAT_VECTOR", position.outputs[0], 4, -2)
    delta = _new_node(nodes, "ShaderNodeVectorMath", 6, -2)
    delta.operation = "SUBTRACT"
    links.new(target, delta.inputs[0])
    links.new(position.outputs[0], delta.inputs[1])
    along = _new_node(nodes, "ShaderNodeVectorMath", 7, -2)
    along.operation = "PROJECT"
    links.new(delta.outputs["Vector"], along.inputs[0])
    links.new(normal.outputs["Normal"], along.inputs[1])
    blur = _new_node(nodes, "GeometryNodeBlurAttribute", 8, -2)
    blur.data_type = "FLOAT_VECTOR"
    links.new(along.outputs["Vector"], _value(blur.inputs))
    links.new(group_in.outputs[SMOOTH], blur.inputs["Iterations"])
    scaled = _new_node(nodes, "ShaderNodeVectorMath", 9, -2)
    scaled.operation = "SCALE"
    links.new(_value(blur.outputs), scaled.inputs[0])
    links.new(group_in.outputs[SNAP], scaled.inputs["Scale"])
    move = _new_node(nodes, "GeometryNodeSetPosition", 10)
    links.new(mesh, move.inputs["Geometry"])
    links.new(scaled.outputs["Vector"], move.inputs["Offset"])
    return move.outputs["Geometry"]


def _transfer_color(nodes, links, source, mesh):
    """Store the ``rgb`` colour of the nearest input point on every vertex."""
    rgb = _new_node(nodes, "GeometryNodeInputNamedAttribute", 9, 2)
    rgb.data_type = "FLOAT_COLOR"
    rgb.inputs["Name"].default_value = COLOR_ATTRIBUTE
    color = _nearest(nodes, links, source, "FLOAT_COLOR", rgb.outputs["Attribute"], 10, 2)
    store = _new_node(nodes, "GeometryNodeStoreNamedAttribute", 11)
    store.data_type, store.domain = "FLOAT_COLOR", "POINT"
    store.inputs["Name"].default_value = COLOR_ATTRIBUTE
    links.new(mesh, store.inputs["Geometry"])
    links.new(color, _value(store.inputs))
    return store.outputs["Geometry"]


def mesh_group() -> bpy.types.GeometryNodeTree:
    """The shared surface group, created on first use."""
    return shared_node_group(MESH_GROUP, _build_mesh_group)


def point_spacing(xyz: np.ndarray, samples: int = SPACING_SAMPLES, seed: int = 0) -> float:
    """Typical distance between neighbouring points: the 75th percentile of nearest-neighbour distances.

    Args:
        xyz: float [N, 3] points (N >= 2).
    Returns:
        The spacing, or 0.0 when every point coincides.
    """
    from mathutils.kdtree import KDTree

    tree = KDTree(len(xyz))
    for i, co in enumerate(xyz.tolist()):
        tree.insert(co, i)
    tree.balance()
    picks = np.random.default_rng(seed).choice(len(xyz), min(samples, len(xyz)), replace=False)
    distances = [d for i in picks.tolist() for _, _, d in tree.find_n(xyz[i].tolist(), 2)[1:] if d > 0.0]
    return float(np.percentile(distances, 75)) if distances else 0.0


def mesh_sizes(xyz: np.ndarray, detail: float) -> MeshSizes:
    """Voxel and radius for a detail level (1 = one voxel per point spacing), refusing oversized grids."""
    if len(xyz) < 4:
        raise MeshError(f"it has {len(xyz)} point(s); a surface needs at least 4")
    spacing = point_spacing(xyz)
    if spacing <= 0.0:
        raise MeshError("all its points coincide, so it has no surface")
    voxel = spacing / detail
    radius = max(RADIUS_PER_SPACING * spacing, 1.5 * voxel)
    extent = xyz.max(axis=0) - xyz.min(axis=0) + 2 * radius
    voxels = int(np.prod(np.ceil(extent / voxel) + 1))
    if voxels > MAX_VOXELS:
        raise MeshError(
            f"detail {detail:g} would need {voxels / 1e6:.0f} million voxels (at most {MAX_VOXELS / 1e6:.0f}); "
            f"choose a detail of {detail * (MAX_VOXELS / voxels) ** (1 / 3) * 0.9:.2g} or less"
        )
    return MeshSizes(spacing, voxel, radius, voxels)


def _read_points(source: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """Positions float32 [N, 3] and colours float32 [N, 4] of the points shown (above "Min Confidence")."""
    from .points import MIN_CONF, MODIFIER

    mesh = source.data
    count = len(mesh.vertices)
    xyz = np.empty(count * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", xyz)
    rgba = np.ones(count * 4, np.float32)
    if COLOR_ATTRIBUTE in mesh.attributes:
        mesh.attributes[COLOR_ATTRIBUTE].data.foreach_get("color", rgba)
    keep = np.ones(count, bool)
    modifier = source.modifiers.get(MODIFIER)
    if "conf" in mesh.attributes and modifier is not None and modifier.node_group is not None:
        conf = np.empty(count, np.float32)
        mesh.attributes["conf"].data.foreach_get("value", conf)
        keep = conf >= float(modifier[input_identifier(modifier.node_group, MIN_CONF)])
    return xyz.reshape(-1, 3)[keep], rgba.reshape(-1, 4)[keep]


def _surface(context, xyz: np.ndarray, rgba: np.ndarray, sizes: MeshSizes) -> bpy.types.Mesh:
    """The evaluated "PanSt3R Mesh" group on a temporary object holding the points, as a new mesh."""
    points = bpy.data.meshes.new("PanSt3R mesh input")
    points.vertices.add(len(xyz))
    points.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(xyz, np.float32).ravel())
    points.attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT").data.foreach_set(
        "color", np.ascontiguousarray(rgba, np.float32).ravel()
    )
    temp = bpy.data.objects.new("PanSt3R mesh input", points)
    context.scene.collection.objects.link(temp)
    try:
        group = mesh_group()
        modifier = temp.modifiers.new(MESH_GROUP, "NODES")
        modifier.node_group = group
        modifier[input_identifier(group, RADIUS)] = sizes.radius
        modifier[input_identifier(group, VOXEL)] = sizes.voxel
        evaluated = temp.evaluated_get(context.evaluated_depsgraph_get())
        return bpy.data.meshes.new_from_object(evaluated)
    finally:
        bpy.data.objects.remove(temp)
        bpy.data.meshes.remove(points)


def _centre_origin(ob: bpy.types.Object) -> None:
    """Put the origin at the centre of the mesh's bounding box without moving it in the world."""
    mesh = ob.data
    xyz = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", xyz)
    xyz = xyz.reshape(-1, 3)
    centre = (xyz.min(axis=0) + xyz.max(axis=0)) / 2
    mesh.attributes["position"].data.foreach_set("vector", (xyz - centre).ravel())
    mesh.update()
    ob.matrix_world = ob.matrix_world @ Matrix.Translation(Vector(centre.tolist()))


def meshes_collection(scene: bpy.types.Scene, source: bpy.types.Object) -> bpy.types.Collection:
    """The "Meshes" collection of the result holding ``source`` (created on first use), else of the scene."""

    parent = next(
        (
            c
            for c in bpy.data.collections
            if c.get(RESULT_PROPERTY) and any(source.name in child.objects for child in [c, *c.children_recursive])
        ),
        None,
    )
    children = parent.children if parent is not None else scene.collection.children
    found = next((c for c in children if c.get(MESH_COLLECTION_PROPERTY)), None)
    if found is None:
        found = bpy.data.collections.new("Meshes")
        found[MESH_COLLECTION_PROPERTY] = 1
        children.link(found)
    return found


def make_mesh(context, source: bpy.types.Object, detail: float = 1.0, texture_size: int = 0) -> bpy.types.Object:
    """A mesh object of one instance's surface, in its "Meshes" collection, with its properties and material.

    texture_size: when not 0, the colours are also baked into a packed image of that size (importers/bake.py)
        and the mesh gets a material using it instead of the class material.
    Raises:
        MeshError: the instance has too few points, the detail asks for too many voxels, or the texture cannot
        be baked (then nothing made here is left).
    """
    from .bake import TEXTURE_PROPERTY, BakeError, bake_texture

    xyz, rgba = _read_points(source)
    sizes = mesh_sizes(xyz, detail)
    mesh = _surface(context, xyz, rgba, sizes)
    if len(mesh.polygons) == 0:
        bpy.data.meshes.remove(mesh)
        raise MeshError(f"no surface came out at detail {detail:g}; choose a lower detail")
    mesh.name = f"{source.name} mesh"
    mesh.materials.clear()  # the evaluated copy brings an empty slot
    for material in source.data.materials:
        mesh.materials.append(material)
    if COLOR_ATTRIBUTE in mesh.color_attributes:
        mesh.color_attributes.active_color = mesh.color_attributes[COLOR_ATTRIBUTE]
    if texture_size:
        try:
            bake_texture(context, mesh, texture_size, mesh.name)
        except BakeError as exc:
            bpy.data.meshes.remove(mesh)
            raise MeshError(f"no texture: {exc}") from exc
        except BaseException:
            bpy.data.meshes.remove(mesh)
            raise
    ob = bpy.data.objects.new(mesh.name, mesh)
    for key in source.keys():
        ob[key] = source[key]
    ob[SOURCE_PROPERTY] = source.name
    ob["mesh_voxel"] = sizes.voxel
    if texture_size:
        ob[TEXTURE_PROPERTY] = texture_size
    ob.color = source.color
    ob.matrix_world = source.matrix_world
    meshes_collection(context.scene, source).objects.link(ob)
    _centre_origin(ob)
    return ob
