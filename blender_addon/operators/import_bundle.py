"""``panst3r.import_bundle``: a result bundle folder -> objects, in one undo step (read -> check -> create)."""

from __future__ import annotations

import time

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .meshes import BAKE_DESCRIPTION, TEXTURE_SIZE_ITEMS

_FROM_SETTINGS = (
    "scale",
    "level_floor",
    "point_size",
    "min_conf",
    "layout_proxies",
    "meshes",
    "bake_texture",
    "texture_size",
)


class PANST3R_OT_import_bundle(bpy.types.Operator):
    """Import a PanSt3R result bundle folder: one point object per segment, materials per class, cameras"""

    bl_idname = "panst3r.import_bundle"
    bl_label = "Import PanSt3R Result"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(
        name="Bundle Folder", subtype="DIR_PATH", description="Folder holding manifest.json and points.npz"
    )
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    scale: FloatProperty(name="Scale", default=1.0, min=1e-4, description="Multiply every imported distance")
    level_floor: BoolProperty(
        name="Level on Floor",
        default=True,
        description="Make floor/rug/carpet points horizontal, with the floor at height 0",
    )
    point_size: FloatProperty(
        name="Point Size",
        default=0.01,
        min=0.0,
        precision=4,
        subtype="DISTANCE",
        description="Radius of the points, in scene units",
    )
    min_conf: FloatProperty(
        name="Hide Below", default=0.0, min=0.0, description="Hide points whose confidence is below this value"
    )
    cameras: BoolProperty(name="Cameras", default=True, description="Create one camera per photo")
    splats: BoolProperty(
        name="Splats",
        default=True,
        description="Import the bundle's Gaussian splats (if any) as a hidden 'Splats' layer",
    )
    meshes: BoolProperty(
        name="Meshes",
        default=False,
        description="Also make a mesh with the photo colours from every labelled instance (as Make Mesh does)",
    )
    mesh_detail: FloatProperty(
        name="Mesh Detail",
        default=1.0,
        min=0.1,
        max=8.0,
        soft_max=3.0,
        description="Grid steps per point spacing of the meshes (higher is finer and slower)",
    )
    bake_texture: BoolProperty(name="Bake Texture", default=False, description=BAKE_DESCRIPTION)
    texture_size: EnumProperty(name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="1024")
    set_scene_camera: BoolProperty(
        name="Set Scene Camera",
        default=True,
        description="Use the reference photo's camera and resolution for rendering",
    )
    layout_proxies: BoolProperty(
        name="Layout Proxies",
        default=False,
        description="Also create one box empty per instance, upright and turned to fit its points, "
        "in a 'Layout' collection (for Replace with Asset and Export Layout JSON)",
    )
    job_id: StringProperty(
        name="Engine Job",
        options={"HIDDEN", "SKIP_SAVE"},
        description="The engine job that made the bundle (set by Run; lets the engine render it)",
    )
    engine: StringProperty(
        name="Engine",
        options={"HIDDEN", "SKIP_SAVE"},
        description="'local', or the URL of the remote engine that ran the job",
    )

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def _options(self, context):
        from ..importers.scene import ImportOptions

        settings = getattr(context.scene, "panst3r", None)
        values = {
            name: getattr(self, name)
            for name in (
                "scale",
                "level_floor",
                "point_size",
                "min_conf",
                "cameras",
                "splats",
                "set_scene_camera",
                "meshes",
                "mesh_detail",
                "bake_texture",
                "texture_size",
                "layout_proxies",
            )
        }
        for name in _FROM_SETTINGS:  # unset operator options follow the panel
            if settings is not None and not self.properties.is_property_set(name):
                values[name] = getattr(settings, name)
        bake, size = values.pop("bake_texture"), int(values.pop("texture_size"))
        values["texture_size"] = size if bake and values["meshes"] else 0
        return ImportOptions(**values)

    def execute(self, context):
        from ..bundle.read import BundleError, read_bundle
        from ..importers.scene import import_bundle

        started = time.perf_counter()
        if not self.directory:
            self.report({"ERROR"}, "Choose a result bundle folder to import")
            return {"CANCELLED"}
        try:
            data = read_bundle(bpy.path.abspath(self.directory))
            result = import_bundle(context, data, self._options(context))
        except BundleError as exc:
            self.report({"ERROR"}, f"Cannot import the result: {exc}")
            return {"CANCELLED"}
        except ValueError as exc:
            self.report({"ERROR"}, f"Cannot import the result: {exc}")
            return {"CANCELLED"}
        if self.job_id:
            result.collection["job_id"], result.collection["engine"] = self.job_id, self.engine
        if len(result.warnings) > 0:
            self.report({"WARNING"}, "; ".join(result.warnings))
        points = sum(ob["point_count"] for ob in result.objects)
        splats = (
            f", {result.splats['splat_count']} splats (hidden; tick Gaussian Splats in the panel to show them)"
            if result.splats
            else ""
        )
        meshes = f", {len(result.meshes)} meshes" if result.meshes else ""
        self.report(
            {"INFO"},
            f"Imported {len(result.objects)} objects ({points} points), "
            f"{len(result.cameras)} cameras{splats}{meshes}"
            + (f", {len(result.proxies)} layout proxies" if result.proxies else "")
            + f" in {time.perf_counter() - started:.2f} s",
        )
        return {"FINISHED"}


def menu_import(self, context) -> None:
    self.layout.operator(PANST3R_OT_import_bundle.bl_idname, text="PanSt3R Result (folder)")


classes = (PANST3R_OT_import_bundle,)
