"""``python -m panst3r_engine export BUNDLE --to FORMAT --out DIR``: one bundle, one format, one new folder.

The bundle is read with the hostile-safe reader; every format is written in a
hidden staging folder and published only when complete (see
:func:`.interchange.write_export`). COLMAP and nerfstudio come from
:mod:`.interchange` (shared with the add-on); PLY, GLB and COCO from
:mod:`.exports`; ``layout`` from ``bundle/layout.py`` when that module exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.interchange import (
    ExportClass,
    ExportError,
    ExportResult,
    ExportScene,
    ExportView,
    export_scene,
    write_export,
)
from panst3r_engine.bundle.read import Bundle, read_bundle
from panst3r_engine.bundle.spec import bundle_path, image_file, panoptic_file

FORMATS = ("colmap", "nerfstudio", "ply", "glb", "coco", "layout")
GLB_FILE = "points.glb"


def _file(bundle: Bundle, relative: str) -> Path | None:
    try:
        return bundle_path(bundle.path, relative)
    except ValueError as exc:
        raise BundleError(str(exc)) from None


def scene_from_bundle(bundle: Bundle) -> ExportScene:
    """The exporters' view of a bundle read by :func:`.read.read_bundle` (stems and matrices already checked)."""
    cameras = {cam["image"]: cam for cam in bundle.manifest["cameras"]}
    views = []
    for entry in bundle.manifest["images"]:
        stem, cam = entry["stem"], cameras[entry["index"]]
        views.append(
            ExportView(
                index=entry["index"],
                stem=stem,
                width=int(entry["processed_size"][0]),
                height=int(entry["processed_size"][1]),
                K=np.asarray(cam["K"], dtype=np.float64),
                cam_to_world=np.asarray(cam["cam_to_world"], dtype=np.float64),
                valid=cam.get("valid", True) is not False,
                photo=_file(bundle, image_file(stem)),
                panoptic=_file(bundle, panoptic_file(stem)) if stem in bundle.manifest["panoptic"] else None,
            )
        )
    classes = [
        ExportClass(c["id"], c["name"], tuple(c["color"]), bool(c["isthing"])) for c in bundle.manifest["classes"]
    ]
    return ExportScene(views, classes, {s["id"]: s["class_id"] for s in bundle.manifest["segments"]}, bundle.points)


def _library_writer(bundle: Bundle, fmt: str, y_up: bool):
    """``write(folder) -> ExportResult`` for the formats of :mod:`.exports` and the layout writer."""
    from panst3r_engine.bundle import exports

    views, points = len(bundle.stems), len(bundle.points["xyz"])

    def write(folder: Path) -> ExportResult:
        if fmt == "ply":
            exports.export_instance_plys(bundle, folder, y_up=y_up)
        elif fmt == "glb":
            exports.export_glb(bundle, folder / GLB_FILE)
        elif fmt == "coco":
            exports.export_coco_panoptic(bundle, folder)
        else:
            _layout_writer()(bundle, folder)
        return ExportResult(folder, fmt, views, points)

    return write


def _layout_writer():
    try:
        from panst3r_engine.bundle.layout import export_layout
    except ImportError as exc:
        if exc.name != "panst3r_engine.bundle.layout":
            raise
        raise BundleError(
            "this engine has no layout writer (panst3r_engine/bundle/layout.py); update the engine to export layouts"
        ) from None
    return export_layout


def export_bundle(
    bundle: str | os.PathLike, fmt: str, out_dir: str | os.PathLike, overwrite: bool = False, y_up: bool = False
) -> ExportResult:
    """Export a bundle folder as ``fmt`` (one of :data:`FORMATS`) into ``out_dir``; raises :class:`BundleError`.

    Args:
        overwrite: write into a non-empty ``out_dir``, replacing only the files the export writes.
        y_up: for ``ply``: a Y-up frame (x, -y, -z) instead of the bundle's OpenCV axes.
    """
    if fmt not in FORMATS:
        raise BundleError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if y_up and fmt != "ply":
        raise BundleError(f"--y-up applies to --to ply only; {fmt} has its own axes (see the README's Exports)")
    if fmt == "layout":
        _layout_writer()  # an engine without it says so before reading anything
    data = read_bundle(bundle)
    try:
        if fmt in ("colmap", "nerfstudio"):
            return export_scene(scene_from_bundle(data), fmt, out_dir, overwrite)
        return write_export(_library_writer(data, fmt, y_up), out_dir, overwrite)
    except ExportError as exc:
        raise BundleError(str(exc)) from None
