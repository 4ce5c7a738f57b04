"""``panst3r.export_bundle``: the bundle an imported result came from -> COLMAP or nerfstudio, in a folder.

read (the result collection's ``bundle`` property) -> check (the folder still holds the bundle) -> write (the
engine's own writers, vendored as ``bundle/_interchange.py``), so users can train splats or NeRFs elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

FORMAT_ITEMS = (
    ("COLMAP", "COLMAP", "COLMAP text model (sparse/0: cameras, posed images, coloured points) and the photos"),
    ("NERFSTUDIO", "nerfstudio", "transforms.json, photos, panoptic maps and points3D.ply for ns-train"),
)
LABELS = {"COLMAP": "COLMAP", "NERFSTUDIO": "nerfstudio"}


class ExportProblem(RuntimeError):
    """A reason the export cannot start, as a sentence."""


def find_result(context, name: str = "") -> bpy.types.Collection:
    """The result to export: named, else the one holding the active object, else the only one in the scene."""
    from ..importers import result_collections

    results = result_collections(context.scene)
    if name:
        found = next((c for c in results if c.name == name), None)
        if found is None:
            raise ExportProblem(f"the scene has no imported PanSt3R result named {name!r}")
        return found
    if not results:
        raise ExportProblem("the scene has no imported PanSt3R result; run PanSt3R or import a result first")
    active = context.view_layer.objects.active
    holding = [c for c in results if active is not None and active.name in c.all_objects]
    if holding or len(results) == 1:
        return (holding or results)[0]
    raise ExportProblem(f"the scene has {len(results)} PanSt3R results; make an object of the one to export active")


def bundle_folder(result: bpy.types.Collection) -> Path:
    """The bundle folder the result was imported from, which must still be there."""
    folder = Path(str(result.get("bundle", "")))
    if not result.get("bundle") or not (folder / "manifest.json").is_file():
        raise ExportProblem(
            f"the result bundle {folder} that {result.name!r} was imported from is gone; import the result "
            "again from where its folder is now, then export"
        )
    return folder


class PANST3R_OT_export_bundle(bpy.types.Operator):
    """Export the imported PanSt3R result for other tools: a COLMAP model or a nerfstudio dataset"""

    bl_idname = "panst3r.export_bundle"
    bl_label = "Export PanSt3R Result"
    bl_options = {"REGISTER"}

    format: EnumProperty(name="Format", items=FORMAT_ITEMS, default="COLMAP", description="What to write")
    directory: StringProperty(
        name="Output Folder", subtype="DIR_PATH", description="A new or empty folder to write the export into"
    )
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    overwrite: BoolProperty(
        name="Overwrite",
        default=False,
        description="Write into a folder that is not empty, replacing only the files the export writes",
    )
    result: StringProperty(
        name="Result",
        options={"SKIP_SAVE"},
        description="Name of the result collection to export (default: the active object's, or the only one)",
    )

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..bundle.export import export_bundle
        from ..bundle.read import BundleError

        if not self.directory:
            self.report({"ERROR"}, "Choose a folder to export into")
            return {"CANCELLED"}
        label = LABELS[self.format]
        try:
            folder = bundle_folder(find_result(context, self.result))
            result = export_bundle(folder, self.format.lower(), bpy.path.abspath(self.directory), self.overwrite)
        except (ExportProblem, BundleError) as exc:
            self.report({"ERROR"}, f"Cannot export to {label}: {exc}")
            return {"CANCELLED"}
        if result.warnings:
            self.report({"WARNING"}, "; ".join(result.warnings))
        self.report({"INFO"}, f"Exported {result.views} images and {result.points} points to {label} in {result.path}")
        return {"FINISHED"}


def menu_export(self, context) -> None:
    for value, label, _ in FORMAT_ITEMS:
        op = self.layout.operator(PANST3R_OT_export_bundle.bl_idname, text=f"PanSt3R Bundle → {label}")
        op.format = value


classes = (PANST3R_OT_export_bundle,)
