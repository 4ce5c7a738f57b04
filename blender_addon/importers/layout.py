"""Layout proxies in Blender: one box empty per instance, read back as boxes, and assets placed in them.

The geometry is ``bundle/_layout.py`` (the engine's ``bundle/layout.py``, vendored): boxes are fitted to
the instance points already converted to Blender's frame (Z up, levelled on the floor when the import
levels), so a proxy's yaw is a turn about Blender's Z.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix

from ..bundle._layout import LayoutBox, Placement, layout_boxes
from ..bundle.read import BundleData

COLLECTION = "Layout"
PROXY_PROPERTY = "layout_proxy"  # marks a proxy empty


def is_proxy(ob) -> bool:
    return ob is not None and ob.type == "EMPTY" and bool(ob.get(PROXY_PROPERTY))


def create_proxies(
    data: BundleData, xyz: np.ndarray, segment: np.ndarray, root: bpy.types.Collection, world_matrix: np.ndarray
) -> list[bpy.types.Object]:
    """A "Layout" collection under ``root`` with a cube empty per segment that has enough points.

    Args:
        xyz: float [N, 3] the bundle's points in Blender's frame; segment: int [N] their segment ids.
        world_matrix: [4, 4] engine world -> Blender, kept on the collection for the layout export.
    """
    classes = {c.id: (c.name, c.isthing) for c in data.classes.values()}
    boxes = layout_boxes(xyz, segment, {s.id: s.class_id for s in data.segments}, classes)
    collection = bpy.data.collections.new(COLLECTION)
    collection["world_matrix"] = np.asarray(world_matrix, np.float64).ravel().tolist()
    root.children.link(collection)
    return [_proxy(box, collection) for box in boxes]


def _proxy(box: LayoutBox, collection: bpy.types.Collection) -> bpy.types.Object:
    ob = bpy.data.objects.new(f"{box.class_name} box", None)
    ob.empty_display_type = "CUBE"
    ob.empty_display_size = 1.0  # the cube spans -1..1, so the scale is the half size
    ob.location = box.centre
    ob.rotation_euler = (0.0, 0.0, box.yaw)
    ob.scale = tuple(max(s / 2, 1e-6) for s in box.size)  # a flat wall keeps a visible, invertible box
    ob[PROXY_PROPERTY] = 1
    ob["segment"], ob["class"], ob["class_id"] = box.segment, box.class_name, box.class_id
    ob["isthing"], ob["point_count"] = box.isthing, box.point_count
    collection.objects.link(ob)
    return ob


def proxy_box(ob: bpy.types.Object) -> LayoutBox:
    """The box a proxy shows now (after any edit): centre, size and yaw from its world matrix."""
    location, rotation, scale = ob.matrix_world.decompose()
    x_axis = rotation @ Matrix.Identity(3).col[0]
    size = [2.0 * ob.empty_display_size * abs(s) for s in scale]
    return LayoutBox(
        int(ob.get("segment", 0)),
        int(ob.get("class_id", -1)),
        str(ob.get("class", "")),
        bool(ob.get("isthing", True)),
        tuple(location),
        tuple(size),
        math.atan2(x_axis.y, x_axis.x),
        int(ob.get("point_count", 0)),
    )


def local_bounds(ob: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """(low [3], high [3]) of an object's bounding box in its own axes, with its own scale applied."""
    corners = np.array([tuple(c) for c in ob.bound_box], np.float64) * np.abs(np.array(ob.scale))
    return corners.min(axis=0), corners.max(axis=0)


def place(ob: bpy.types.Object, placement: Placement, own_scale) -> None:
    """Apply a placement computed for bounds that already include the object's ``own_scale``."""
    ob.parent = None
    ob.location = placement.location
    ob.rotation_mode = "XYZ"
    ob.rotation_euler = (0.0, 0.0, placement.yaw)
    ob.scale = tuple(float(a) * float(b) for a, b in zip(placement.scale, own_scale))
