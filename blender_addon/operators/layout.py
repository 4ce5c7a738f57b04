"""Layout proxies: replace a proxy box with an asset, and export the boxes as layout.json."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, StringProperty

ASSETS = "Layout Assets"


def _object_names(self, context, edit_text):
    return [ob.name for ob in bpy.data.objects if ob.type in {"MESH", "CURVE", "SURFACE", "META", "FONT"}]


def _library_object(filepath: str, name: str, link: bool):
    """An object appended (or linked) from a .blend library; raises ValueError with a sentence."""
    path = Path(bpy.path.abspath(filepath))
    if path.suffix.lower() != ".blend" or not path.is_file():
        raise ValueError(f"{path} is not a .blend file; choose the library file that holds the asset")
    with bpy.data.libraries.load(str(path), link=link) as (data_from, data_to):
        if name not in data_from.objects:
            raise ValueError(f"{path.name} has no object named {name!r}; type the name of one of its objects")
        data_to.objects = [name]
    return data_to.objects[0]


def _assets_collection(proxy) -> bpy.types.Collection:
    """The "Layout Assets" collection beside the proxy's collection (made once per result)."""
    home = proxy.users_collection[0]
    parent = next((c for c in bpy.data.collections if home.name in c.children), None)
    for child in parent.children if parent is not None else ():
        if child.get("layout_assets"):
            return child
    collection = bpy.data.collections.new(ASSETS)
    collection["layout_assets"] = 1
    (parent.children if parent is not None else bpy.context.scene.collection.children).link(collection)
    return collection


class PANST3R_OT_replace_with_asset(bpy.types.Operator):
    """Place a copy of an object (or of a library asset) into the active layout proxy's box"""

    bl_idname = "panst3r.replace_with_asset"
    bl_label = "Replace with Asset"
    bl_options = {"REGISTER", "UNDO"}

    asset: StringProperty(name="Asset", search=_object_names, description="Object to place (its mesh is shared)")
    filepath: StringProperty(
        name="Library",
        subtype="FILE_PATH",
        description="A .blend file to take the asset from (empty: an object of this file)",
    )
    link: BoolProperty(name="Link", default=False, description="Link the library object instead of appending it")
    fit: EnumProperty(
        name="Fit",
        default="FIT",
        description="How the asset is scaled to the box",
        items=[
            ("FIT", "Fit", "One scale for all axes: the largest asset that fits in the box"),
            ("FILL", "Fill", "Scale each axis to the box (stretches the asset)"),
        ],
    )
    align: BoolProperty(
        name="Align Long Sides", default=True, description="Turn the asset 90° when that lines up its longer side"
    )
    hide_proxy: BoolProperty(name="Hide Proxy", default=True, description="Hide the proxy box afterwards")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        from ..bundle._layout import fit_asset
        from ..importers.layout import is_proxy, local_bounds, place, proxy_box

        proxy = context.view_layer.objects.active
        if not is_proxy(proxy):
            self.report({"ERROR"}, "Make a layout proxy (a box of the Layout collection) the active object first")
            return {"CANCELLED"}
        try:
            source = (
                _library_object(self.filepath, self.asset, self.link) if self.filepath else bpy.data.objects[self.asset]
            )
            low, high = local_bounds(source)
            placement = fit_asset(proxy_box(proxy), low, high, fill=self.fit == "FILL", align=self.align)
        except KeyError:
            self.report({"ERROR"}, f"No object is named {self.asset!r}; choose the asset to place")
            return {"CANCELLED"}
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, f"Cannot place the asset: {exc}")
            return {"CANCELLED"}
        appended = bool(self.filepath) and not self.link  # a new object of this file: placed itself
        copy = source if appended else source.copy()  # a copy shares the mesh: many boxes hold one asset cheaply
        _assets_collection(proxy).objects.link(copy)
        place(copy, placement, tuple(source.scale))
        copy["segment"], copy["class"], copy["layout_proxy_name"] = proxy["segment"], proxy["class"], proxy.name
        if self.hide_proxy:
            proxy.hide_set(True)
        context.view_layer.objects.active = copy
        self.report({"INFO"}, f"Placed {source.name} in {proxy.name}")
        return {"FINISHED"}


class PANST3R_OT_export_layout(bpy.types.Operator):
    """Write the layout proxies (class, box, yaw, segment id) as a layout.json for scene-layout tools"""

    bl_idname = "panst3r.export_layout"
    bl_label = "Export Layout JSON"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", description="The JSON file to write")
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def invoke(self, context, event):
        if not self.filepath:
            self.filepath = "layout.json"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..bundle._layout import layout_document, write_layout
        from ..importers.layout import is_proxy, proxy_box

        proxies = sorted((ob for ob in context.scene.objects if is_proxy(ob)), key=lambda ob: ob.get("segment", 0))
        if not proxies:
            self.report({"ERROR"}, "No layout proxies in this scene; import a result with Layout Proxies ticked")
            return {"CANCELLED"}
        if not self.filepath:
            self.report({"ERROR"}, "Choose a file to write the layout to")
            return {"CANCELLED"}
        path = Path(bpy.path.abspath(self.filepath))
        path = path if path.suffix.lower() == ".json" else path.with_suffix(".json")
        matrix = proxies[0].users_collection[0].get("world_matrix")
        frame = {
            "axes": "Blender world: right-handed, Z up",
            "units": "Blender units (the import's scale times the bundle's)",
            "world_to_frame": np.reshape(list(matrix), (4, 4)).tolist() if matrix is not None else None,
        }
        document = layout_document([proxy_box(ob) for ob in proxies], frame, bpy.path.basename(bpy.data.filepath))
        try:
            write_layout(document, path)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot write {path} ({exc.strerror or exc}); choose a folder you can write to")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {len(proxies)} boxes to {path}")
        return {"FINISHED"}


classes = (PANST3R_OT_replace_with_asset, PANST3R_OT_export_layout)
