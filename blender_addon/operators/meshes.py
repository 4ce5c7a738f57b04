"""``panst3r.make_mesh``: the selected instances -> mesh assets in a "Meshes" collection (read -> check -> create)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty

DETAIL_DESCRIPTION = (
    "Grid steps per point spacing: 1 follows the points' own density, 2 is finer (about 4 times slower), "
    "0.5 coarser and faster"
)

BAKE_DESCRIPTION = (
    "Also unwrap each mesh and bake its photo colours into an image texture packed into the .blend, with a "
    "material using it (for glTF/FBX export)"
)
TEXTURE_SIZE_ITEMS = [(str(s), f"{s} px", f"A {s}×{s} texture per mesh") for s in (512, 1024, 2048, 4096)]


def point_instances(objects) -> list:
    """The PanSt3R point instances among objects (meshes made from them are left out)."""
    from ..importers.points import MODIFIER

    return [ob for ob in objects if "segment" in ob and ob.type == "MESH" and ob.modifiers.get(MODIFIER) is not None]


def make_meshes(context, sources: list, detail: float, texture_size: int = 0) -> tuple[list, list[str]]:
    """One mesh per source instance (baked to a ``texture_size`` image unless 0), with the window manager's
    progress; returns (meshes, one sentence per failure)."""
    from ..importers.meshes import MeshError, make_mesh

    made, failed = [], []
    wm = context.window_manager
    wm.progress_begin(0, len(sources))
    try:
        for i, source in enumerate(sources):
            try:
                made.append(make_mesh(context, source, detail, texture_size))
            except MeshError as exc:
                failed.append(f"{source.name}: {exc}")
            wm.progress_update(i + 1)
    finally:
        wm.progress_end()
    return made, failed


class PANST3R_OT_make_mesh(bpy.types.Operator):
    """Make a mesh with the photo colours from each selected instance, in the result's "Meshes" collection"""

    bl_idname = "panst3r.make_mesh"
    bl_label = "Make Mesh"
    bl_options = {"REGISTER", "UNDO"}

    detail: FloatProperty(name="Detail", default=1.0, min=0.1, max=8.0, soft_max=3.0, description=DETAIL_DESCRIPTION)
    bake_texture: BoolProperty(name="Bake Texture", default=False, description=BAKE_DESCRIPTION)
    texture_size: EnumProperty(
        name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="1024", description="Width and height of each texture"
    )

    def execute(self, context):
        selected = list(context.selected_objects)
        sources = point_instances(selected)
        if not sources:
            self.report({"ERROR"}, "Select one or more imported PanSt3R instances (point objects) first")
            return {"CANCELLED"}
        texture_size = int(self.texture_size) if self.bake_texture else 0
        if texture_size:
            from ..importers.bake import BakeError, check_budget

            try:
                check_budget(len(sources), texture_size)
            except BakeError as exc:
                self.report({"ERROR"}, f"Cannot bake: {exc}")
                return {"CANCELLED"}
        made, failed = make_meshes(context, sources, self.detail, texture_size)
        if failed:
            self.report({"WARNING"} if made else {"ERROR"}, "; ".join(failed))
        if not made:
            return {"CANCELLED"}
        context.view_layer.update()  # the new collection's objects join the view layer (removed helpers leave it)
        for ob in selected:
            ob.select_set(False)
        for ob in made:
            ob.select_set(True)
        context.view_layer.objects.active = made[0]
        faces = sum(len(ob.data.polygons) for ob in made)
        self.report({"INFO"}, f"Made {len(made)} mesh(es), {faces} faces, in the Meshes collection")
        return {"FINISHED"}


classes = (PANST3R_OT_make_mesh,)
