"""The "PanSt3R" tab of the 3D viewport sidebar: photos, options, run with progress, display and tools."""

from __future__ import annotations

import bpy

from .. import runtime
from ..operators.photos import has_movie, is_movie


class PANST3R_UL_photos(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        if item.image is not None:
            layout.label(text=item.image.name, icon="IMAGE_DATA")
        else:
            icon = "FILE_MOVIE" if is_movie(item.path) else "FILE_IMAGE"
            layout.label(text=bpy.path.basename(item.path) or "(no file)", icon=icon)


class _PanSt3RPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PanSt3R"


def _draw_progress(layout, state: dict) -> None:
    if state["state"] == "idle":
        return
    if state["state"] in ("done", "failed", "cancelled"):
        icon = {"done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}[state["state"]]
        box = layout.box()
        for line in _wrap(state["error"] or state["message"] or state["state"], 48)[:6]:
            box.label(text=line, icon=icon)
            icon = "BLANK1"
        return
    stage = state["stage"].replace("_", " ") or state["state"]
    layout.progress(factor=state["progress"], text=f"{stage} {state['progress'] * 100:.0f}%")
    if state["message"]:
        layout.label(text=state["message"][:60])


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


class VIEW3D_PT_panst3r(_PanSt3RPanel, bpy.types.Panel):
    bl_label = "PanSt3R"

    def draw(self, context):
        layout = self.layout
        state = runtime.manager.poll()
        row = layout.row(align=True)
        row.scale_y = 1.4
        if runtime.manager.busy:
            row.operator("panst3r.cancel", icon="CANCEL")
        else:
            row.operator("panst3r.run", icon="PLAY")
        _draw_progress(layout, state)
        from ..preferences import get_preferences

        prefs = get_preferences(context)
        where = f"remote at {prefs.remote_url}" if prefs.engine_mode == "REMOTE" else runtime.host.describe()
        layout.label(text=f"Engine {where}"[:70], icon="SETTINGS")


class VIEW3D_PT_panst3r_photos(_PanSt3RPanel, bpy.types.Panel):
    bl_label = "Photos"
    bl_parent_id = "VIEW3D_PT_panst3r"

    def draw(self, context):
        layout, settings = self.layout, context.scene.panst3r
        row = layout.row()
        row.template_list("PANST3R_UL_photos", "", settings, "photos", settings, "photo_index", rows=3)
        col = row.column(align=True)
        col.operator("panst3r.add_photos", text="", icon="ADD")
        col.operator("panst3r.add_blend_images", text="", icon="IMAGE_DATA")
        col.operator("panst3r.add_movie_clip", text="", icon="FILE_MOVIE")
        col.operator("panst3r.remove_photo", text="", icon="REMOVE")
        col.operator("panst3r.remove_photo", text="", icon="TRASH").clear = True
        layout.prop(settings, "folder")
        layout.label(text=f"{len(settings.photos)} listed" + (" + folder" if settings.folder else ""))


class VIEW3D_PT_panst3r_options(_PanSt3RPanel, bpy.types.Panel):
    bl_label = "Options"
    bl_parent_id = "VIEW3D_PT_panst3r"

    def draw(self, context):
        layout, settings = self.layout, context.scene.panst3r
        layout.use_property_split = True
        layout.prop(settings, "keyframes")
        if has_movie(settings):
            layout.prop(settings, "video_frames")
            layout.prop(settings, "video_fps")
        layout.prop(settings, "postprocess")
        layout.prop(settings, "vocab")
        if settings.vocab == "CUSTOM":
            layout.prop(settings, "custom_vocab_text")
            if settings.custom_vocab_text is None:
                layout.prop(settings, "custom_vocab")
        layout.prop(settings, "conf_threshold")
        layout.prop(settings, "splats")
        if settings.splats:
            layout.prop(settings, "splat_steps")


class VIEW3D_PT_panst3r_display(_PanSt3RPanel, bpy.types.Panel):
    bl_label = "Import and Display"
    bl_parent_id = "VIEW3D_PT_panst3r"

    def draw(self, context):
        layout, settings = self.layout, context.scene.panst3r
        layout.use_property_split = True
        layout.prop(settings, "display", expand=True)
        layout.prop(settings, "point_size")
        layout.prop(settings, "min_conf")
        layout.prop(settings, "scale")
        layout.prop(settings, "level_floor")
        layout.prop(settings, "layout_proxies")
        layout.prop(settings, "meshes")
        bake = layout.column()
        bake.enabled = settings.meshes  # baking applies to the meshes
        bake.prop(settings, "bake_texture")
        row = bake.row()
        row.enabled = settings.meshes and settings.bake_texture
        row.prop(settings, "texture_size")
        layout.operator("panst3r.import_bundle", icon="IMPORT")
        from ..importers import result_collections

        row = layout.row(align=True)  # File > Export has the same two entries
        row.enabled = bool(result_collections(context.scene))
        row.operator("panst3r.export_bundle", text="COLMAP", icon="EXPORT").format = "COLMAP"
        row.operator("panst3r.export_bundle", text="nerfstudio", icon="EXPORT").format = "NERFSTUDIO"
        _draw_splats(context, layout)


def _draw_splats(context, layout) -> None:
    """One checkbox per splat layer (its view-layer exclude, inverted) and the engine render button."""
    from ..importers.splats import splat_layers

    layers = splat_layers(context)
    if not layers and not any(c.get("job_id") for c in context.scene.collection.children_recursive):
        return
    col = layout.column(heading="Splats")
    for collection, layer in layers:
        count = sum(ob.get("splat_count", 0) for ob in collection.objects)
        parent = next((c.name for c in bpy.data.collections if collection.name in c.children), "")
        text = f"Gaussian Splats ({count})" + (f" of {parent}" if len(layers) > 1 and parent else "")
        col.prop(layer, "exclude", text=text, invert_checkbox=True)
    layout.operator("panst3r.render_view_engine", icon="RENDER_STILL")


class VIEW3D_PT_panst3r_tools(_PanSt3RPanel, bpy.types.Panel):
    bl_label = "Instances"
    bl_parent_id = "VIEW3D_PT_panst3r"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        active = context.view_layer.objects.active
        if active is not None and "segment" in active:
            layout.label(
                text=f"{active['class']}: segment {active['segment']}, {active.get('point_count', 0)} "
                f"points, score {active.get('score', 0.0):.2f}",
                icon="OBJECT_DATA",
            )
        col = layout.column(align=True)
        col.operator("panst3r.select_class", icon="RESTRICT_SELECT_OFF")
        col.operator("panst3r.extract_instance", icon="DUPLICATE")
        col.operator("panst3r.make_mesh", icon="MESH_DATA")
        col.operator("panst3r.show_all", icon="HIDE_OFF")
        col.operator("panst3r.use_camera", icon="CAMERA_DATA")
        col = layout.column(align=True, heading="Layout")
        if active is not None and active.get("layout_proxy"):
            col.operator("panst3r.replace_with_asset", icon="MESH_CUBE")
        col.operator("panst3r.export_layout", icon="EXPORT")


classes = (
    PANST3R_UL_photos,
    VIEW3D_PT_panst3r,
    VIEW3D_PT_panst3r_photos,
    VIEW3D_PT_panst3r_options,
    VIEW3D_PT_panst3r_display,
    VIEW3D_PT_panst3r_tools,
)
