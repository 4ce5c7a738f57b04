"""Tools on imported results: select a class, extract one instance, look through a photo's camera."""

from __future__ import annotations

import bpy
import numpy as np
from bpy.props import BoolProperty, StringProperty
from mathutils import Matrix, Vector

EXTRACTED = "Extracted"


def _instance_objects(scene) -> list:
    return [ob for ob in scene.objects if "segment" in ob and "class" in ob]


class PANST3R_OT_select_class(bpy.types.Operator):
    """Select every imported instance of a class (by default the active object's class)"""

    bl_idname = "panst3r.select_class"
    bl_label = "Select Class"
    bl_options = {"REGISTER", "UNDO"}

    class_name: StringProperty(name="Class", description="Class to select; empty = the active object's class")
    extend: BoolProperty(name="Extend", default=False, description="Keep the current selection")

    def execute(self, context):
        name = self.class_name.strip()
        active = context.view_layer.objects.active
        if not name:
            if active is None or "class" not in active:
                self.report({"ERROR"}, "Make a PanSt3R instance active, or type a class name")
                return {"CANCELLED"}
            name = str(active["class"])
        matches = [ob for ob in _instance_objects(context.scene) if str(ob["class"]).lower() == name.lower()]
        if not matches:
            self.report({"ERROR"}, f"No imported instance has the class {name!r}")
            return {"CANCELLED"}
        if not self.extend:
            for ob in context.view_layer.objects:
                ob.select_set(False)
        for ob in matches:
            if ob.visible_get():
                ob.select_set(True)
        if active not in matches:
            context.view_layer.objects.active = matches[0]
        self.report({"INFO"}, f"Selected {len(matches)} instance(s) of {name}")
        return {"FINISHED"}


def _extracted_collection(scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(EXTRACTED)
    if collection is None:
        collection = bpy.data.collections.new(EXTRACTED)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def _origin_to_centre(ob: bpy.types.Object) -> None:
    """Move the object origin to the points' centroid without moving the points in the world."""
    mesh = ob.data
    count = len(mesh.vertices)
    if count == 0:
        return
    xyz = np.empty(count * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", xyz)
    xyz = xyz.reshape(-1, 3)
    centre = xyz.mean(axis=0)
    mesh.attributes["position"].data.foreach_set("vector", (xyz - centre).ravel())
    mesh.update()
    ob.matrix_world = ob.matrix_world @ Matrix.Translation(Vector(centre.tolist()))


class PANST3R_OT_extract_instance(bpy.types.Operator):
    """Copy the active instance into its own object in the "Extracted" collection, at the same world position"""

    bl_idname = "panst3r.extract_instance"
    bl_label = "Extract Instance"
    bl_options = {"REGISTER", "UNDO"}

    hide_others: BoolProperty(
        name="Hide Others", default=False, description="Hide the other imported instances to isolate this one"
    )
    centre_origin: BoolProperty(
        name="Origin to Centre", default=True, description="Put the new object's origin at the centre of its points"
    )

    def execute(self, context):
        source = context.view_layer.objects.active
        if source is None or "segment" not in source or source.type != "MESH":
            self.report({"ERROR"}, "Make a PanSt3R instance the active object first")
            return {"CANCELLED"}
        copy = source.copy()
        copy.data = source.data.copy()
        copy.name = f"{source.name} extracted"
        _extracted_collection(context.scene).objects.link(copy)
        if self.centre_origin:
            _origin_to_centre(copy)
        if self.hide_others:
            for ob in _instance_objects(context.scene):
                if ob is not copy and ob.name in context.view_layer.objects:
                    ob.hide_set(True)
        for ob in context.view_layer.objects:
            ob.select_set(False)
        copy.select_set(True)
        context.view_layer.objects.active = copy
        self.report({"INFO"}, f"Extracted {source.name} ({copy.get('point_count', 0)} points)")
        return {"FINISHED"}


class PANST3R_OT_show_all(bpy.types.Operator):
    """Unhide every imported instance"""

    bl_idname = "panst3r.show_all"
    bl_label = "Show All Instances"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        for ob in _instance_objects(context.scene):
            if ob.name in context.view_layer.objects:
                ob.hide_set(False)
        return {"FINISHED"}


class PANST3R_OT_use_camera(bpy.types.Operator):
    """Render through the active photo camera, at its photo's resolution"""

    bl_idname = "panst3r.use_camera"
    bl_label = "Use Photo Camera"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from ..importers.cameras import use_camera

        ob = context.view_layer.objects.active
        if ob is None or ob.type != "CAMERA" or "resolution" not in ob:
            self.report({"ERROR"}, "Make an imported PanSt3R camera the active object first")
            return {"CANCELLED"}
        use_camera(context.scene, ob)
        return {"FINISHED"}


classes = (PANST3R_OT_select_class, PANST3R_OT_extract_instance, PANST3R_OT_show_all, PANST3R_OT_use_camera)
