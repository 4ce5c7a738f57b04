"""An imported scene renders in Cycles (CPU): points visible, in their class colours.

Set PANST3R_README_RENDER=/path/to/image.png to also write a larger picture for the README.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from blender_addon.bundle.read import read_bundle


def _render(bpy, scene, path: Path, width: int, height: int, samples: int) -> np.ndarray:
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    assert path.is_file()
    from blender_addon.bundle.png import read_png

    return read_png(path)


def test_cycles_render_shows_the_classes(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle), point_size=0.03) == {"FINISHED"}
    pixels = _render(bpy, scene, tmp_path / "render.png", 64, 48, 4)
    covered = pixels[..., 3] > 128
    assert covered.mean() > 0.3, f"only {covered.mean():.0%} of the image shows points"
    rgb = pixels[covered][:, :3].astype(int)
    classes = read_bundle(room_bundle).classes
    found = [
        classes[class_id].name
        for class_id in (0, 1, 2, 3)
        if (np.abs(rgb - np.array(classes[class_id].color)).max(axis=1) < 40).mean() > 0.01
    ]
    assert found == ["floor", "wall", "chair", "table"], found


def test_readme_picture(addon, scene, room_bundle: Path, tmp_path: Path) -> None:
    """Only when PANST3R_README_RENDER names a file: a 480x360 render of the synthetic room."""
    target = os.environ.get("PANST3R_README_RENDER")
    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle), point_size=0.015) == {"FINISHED"}
    if not target:
        return
    bpy.data.objects["unlabelled"].hide_render = True
    camera = bpy.data.objects["Camera.left"]
    addon.module("importers.cameras").use_camera(scene, camera)
    pixels = _render(bpy, scene, Path(target).resolve(), 480, 360, 16)
    assert (pixels[..., 3] > 128).mean() > 0.3
