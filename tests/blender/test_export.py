"""``panst3r.export_bundle`` in real Blender: the imported result's bundle -> COLMAP / nerfstudio, read back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from panst3r_engine.bundle.write import write_bundle
from tests.bundle.test_interchange import _nerfstudio_pixel, check_transforms_schema
from tests.bundle_utils import make_consistent_bundle_inputs


@pytest.fixture(scope="module")
def consistent_bundle(tmp_path_factory) -> Path:
    """A bundle whose points project onto their pixels; view 1's camera was not recovered."""
    return write_bundle(
        tmp_path_factory.mktemp("export") / "bundle", *make_consistent_bundle_inputs(invalid_views=(1,))
    )


def _import(bpy, bundle: Path):
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    return next(c for c in bpy.data.collections if c.get("panst3r_result"))


def test_colmap_export_of_the_imported_result(addon, scene, consistent_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    _import(bpy, consistent_bundle)
    out = tmp_path / "colmap"
    assert bpy.ops.panst3r.export_bundle(format="COLMAP", directory=str(out)) == {"FINISHED"}
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    points = np.load(consistent_bundle / "points.npz")
    assert sorted(image.name for image in model.images.values()) == ["IMG_0001.jpg", "portrait.jpg"]
    assert model.num_points3D() == len(points["xyz"])
    for point_id, point in model.points3D.items():
        if point.track.length():
            (element,) = point.track.elements
            image = model.images[element.image_id]
            observed = image.points2D[element.point2D_idx].xy
            np.testing.assert_allclose(observed, points["pixel"][point_id - 1] + 0.5)
            np.testing.assert_allclose(
                image.camera.img_from_cam(image.cam_from_world() * point.xyz), observed, atol=2e-3
            )


def test_nerfstudio_export_is_the_engines(addon, scene, consistent_bundle: Path, tmp_path: Path) -> None:
    """The add-on writes with the engine's vendored module: the same files, byte for byte."""
    from panst3r_engine.bundle.convert import export_bundle

    bpy = addon.bpy
    _import(bpy, consistent_bundle)
    out = tmp_path / "ns"
    assert bpy.ops.panst3r.export_bundle(format="NERFSTUDIO", directory=str(out)) == {"FINISHED"}
    doc = json.loads((out / "transforms.json").read_text())
    check_transforms_schema(doc, out)
    points = np.load(consistent_bundle / "points.npz")
    frame = doc["frames"][0]
    rows = points["view"] == 0
    np.testing.assert_allclose(
        _nerfstudio_pixel(doc, frame, points["xyz"][rows].astype(np.float64)), points["pixel"][rows] + 0.5, atol=2e-3
    )
    export_bundle(consistent_bundle, "nerfstudio", tmp_path / "engine")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "engine") for p in (tmp_path / "engine").rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (tmp_path / "engine" / f).read_bytes() for f in files)


def test_problems_are_one_sentence_and_write_nothing(addon, scene, consistent_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    with pytest.raises(RuntimeError, match="the scene has no imported PanSt3R result"):
        bpy.ops.panst3r.export_bundle(format="COLMAP", directory=str(tmp_path / "a"))
    moved = shutil.copytree(consistent_bundle, tmp_path / "moved")
    _import(bpy, moved)
    out = tmp_path / "full"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="is not empty; .*tick Overwrite"):
        bpy.ops.panst3r.export_bundle(format="NERFSTUDIO", directory=str(out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert bpy.ops.panst3r.export_bundle(format="NERFSTUDIO", directory=str(out), overwrite=True) == {"FINISHED"}
    assert (out / "notes.txt").read_text() == "mine" and (out / "transforms.json").is_file()
    shutil.rmtree(moved)
    with pytest.raises(RuntimeError, match="was imported from is gone; import the result again"):
        bpy.ops.panst3r.export_bundle(format="COLMAP", directory=str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_file_export_menu_has_both_formats(addon) -> None:
    from tests.blender.test_addon import _Layout

    bpy = addon.bpy
    module = addon.module("operators.export_bundle")
    assert module.menu_export in bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()
    menu = type("MenuStub", (), {"layout": _Layout(bpy)})()
    module.menu_export(menu, bpy.context)
    assert menu.layout.calls == [("operator", "panst3r.export_bundle")] * 2


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_the_addons_export_refuses_a_linked_panoptic_map(tmp_path: Path) -> None:
    """Plain Python: the add-on's bundle layer (no bpy) checks every file it copies."""
    from blender_addon.bundle.export import export_bundle as addon_export
    from blender_addon.bundle.read import BundleError

    bundle = write_bundle(tmp_path / "bundle", *make_consistent_bundle_inputs())
    (tmp_path / "elsewhere.png").write_bytes((bundle / "panoptic" / "portrait.png").read_bytes())
    (bundle / "panoptic" / "portrait.png").unlink()
    (bundle / "panoptic" / "portrait.png").symlink_to(tmp_path / "elsewhere.png")
    for fmt in ("nerfstudio", "colmap"):  # the bundle is refused as a whole, as the engine's reader does
        with pytest.raises(BundleError, match="is a link"):
            addon_export(bundle, fmt, tmp_path / fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "elsewhere.png"]
