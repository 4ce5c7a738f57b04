"""Helpers shared by the Geometry Nodes display groups (points and splats)."""

from __future__ import annotations

from collections.abc import Callable

import bpy


def shared_node_group(name: str, build: Callable[[bpy.types.GeometryNodeTree], None]) -> bpy.types.GeometryNodeTree:
    """The named Geometry Nodes group, built on first use and shared by every object after that."""
    group = bpy.data.node_groups.get(name)
    if group is None or group.bl_idname != "GeometryNodeTree":
        group = bpy.data.node_groups.new(name, "GeometryNodeTree")
        build(group)
    return group


def input_identifier(group: bpy.types.GeometryNodeTree, name: str) -> str:
    """The modifier key of a group input socket, found by its display name."""
    return next(
        item.identifier
        for item in group.interface.items_tree
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name
    )


def set_group_input(ob: bpy.types.Object, modifier_name: str, name: str, value) -> bool:
    """Set one group input of an object's display modifier; False when the object has none."""
    modifier = ob.modifiers.get(modifier_name)
    if modifier is None or modifier.node_group is None:
        return False
    modifier[input_identifier(modifier.node_group, name)] = value
    ob.update_tag()
    return True
