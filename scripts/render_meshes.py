"""The README picture of Make Mesh and layout proxies: the meshes of a rendered synthetic room, in the photos'
colours, with each instance's proxy box drawn as a wireframe.

    .venv/bin/python scripts/render_meshes.py [docs/meshes.png] [--width 480] [--height 320]

Renders the seeded room of the mesh tests (``panst3r_engine.eval.synthetic``, 8 views), writes its ground-truth
bundle, imports it with the Meshes and Layout Proxies options in Blender-as-a-module, hides the points and the
ceiling, draws every furniture proxy (the box empties do not render) as a yellow wireframe box with the empty's
transform, and renders with Workbench (colour attribute, studio light) from above one corner.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _look_from(bpy, scene, eye, target) -> None:
    from mathutils import Vector

    camera = bpy.data.objects.new("Picture", bpy.data.cameras.new("Picture"))
    scene.collection.objects.link(camera)
    camera.location = eye
    camera.rotation_euler = (Vector(target) - Vector(eye)).to_track_quat("-Z", "Y").to_euler()
    camera.data.lens = 18.0
    scene.camera = camera


WIRE_RGBA = (1.0, 0.85, 0.0, 1.0)
STRUCTURE = ("wall", "floor", "ceiling", "window")  # room shell: its boxes would hide the furniture


def _wire_box(bpy, scene, proxy) -> None:
    """A wireframe cube mesh with the proxy's transform (a unit-half-size cube, as the empty's CUBE display)."""
    mesh = bpy.data.meshes.new(f"{proxy.name} wire")
    corners = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(corners, [], faces)
    colour = mesh.color_attributes.new("rgb", "FLOAT_COLOR", "POINT")
    colour.data.foreach_set("color", WIRE_RGBA * len(corners))
    mesh.color_attributes.active_color = colour
    ob = bpy.data.objects.new(mesh.name, mesh)
    scene.collection.objects.link(ob)
    ob.matrix_world = proxy.matrix_world
    wire = ob.modifiers.new("wire", "WIREFRAME")
    wire.thickness = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "meshes.png"))
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=320)
    args = parser.parse_args()

    import bpy
    import numpy as np

    importlib.import_module("addon_utils").enable("blender_addon", default_set=True)
    from panst3r_engine.eval.ground_truth import bundle_from_scene
    from tests.blender.mesh_metrics import render_scene

    with tempfile.TemporaryDirectory(prefix="panst3r-meshes-picture-") as tmp:
        render_scene(Path(tmp) / "room", 8, 128, 96)
        bundle = bundle_from_scene(Path(tmp) / "room", None, Path(tmp) / "bundle", stride=1)
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        options = {"meshes": True, "layout_proxies": True, "cameras": False}
        assert bpy.ops.panst3r.import_bundle(directory=str(bundle), **options) == {"FINISHED"}
    made = [ob for ob in scene.objects if "mesh_source" in ob]
    proxies = [ob for ob in scene.objects if ob.get("layout_proxy") and ob["class"] not in STRUCTURE]
    for ob in list(scene.objects):
        ob.hide_render = ob not in made or ob["class"] == "ceiling"
    for proxy in proxies:
        _wire_box(bpy, scene, proxy)
    corners = np.array([np.array(ob.matrix_world) @ np.append(v.co, 1.0) for ob in made for v in ob.data.vertices])
    lo, hi = corners[:, :3].min(0), corners[:, :3].max(0)
    centre = (lo + hi) / 2
    _look_from(bpy, scene, (lo[0] + 0.1, lo[1] + 0.1, hi[2] + 1.5), (centre[0], centre[1], lo[2]))
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "VERTEX"  # the active colour attribute: "rgb", the photos' colour
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y = args.width, args.height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.compression = 100
    scene.render.filepath = str(Path(args.out).resolve())
    bpy.ops.render.render(write_still=True)
    print(f"wrote {args.out}: {len(made)} meshes, {len(proxies)} proxy boxes")


if __name__ == "__main__":
    main()
