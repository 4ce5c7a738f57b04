"""A bundle read by the add-on -> COLMAP or nerfstudio, with the engine's own writers (no bpy).

``_interchange`` is the engine's ``panst3r_engine/bundle/interchange.py``,
copied byte for byte by build.py, so the add-on's Export menu and
``python -m panst3r_engine export`` write the same files.
"""

from __future__ import annotations

from pathlib import Path

from ._interchange import FORMATS, ExportClass, ExportError, ExportResult, ExportScene, ExportView, export_scene
from ._spec import bundle_path, panoptic_file
from .read import BundleData, BundleError, read_bundle

__all__ = ["FORMATS", "export_bundle", "scene_from_bundle"]


def _panoptic(data: BundleData, stem: str) -> Path | None:
    if stem not in data.manifest.get("panoptic", {}):
        return None
    try:
        return bundle_path(data.path, panoptic_file(stem))
    except ValueError as exc:
        raise BundleError(str(exc)) from None


def scene_from_bundle(data: BundleData) -> ExportScene:
    """The exporters' view of a bundle the add-on's reader checked."""
    valid = {int(cam["image"]): cam.get("valid", True) is not False for cam in data.manifest["cameras"]}
    views = [
        ExportView(
            index=cam.image,
            stem=cam.stem,
            width=cam.width,
            height=cam.height,
            K=cam.K,
            cam_to_world=cam.cam_to_world,
            valid=valid.get(cam.image, True),
            photo=cam.photo,
            panoptic=_panoptic(data, cam.stem),
        )
        for cam in data.cameras
    ]
    classes = [ExportClass(c.id, c.name, c.color, c.isthing) for c in data.classes.values()]
    return ExportScene(views, classes, {s.id: s.class_id for s in data.segments}, data.points)


def export_bundle(bundle: str | Path, fmt: str, out_dir: str | Path, overwrite: bool = False) -> ExportResult:
    """Read the bundle folder and write it as ``fmt`` ("colmap" or "nerfstudio") into ``out_dir`` atomically.

    Raises :class:`BundleError` with a sentence; nothing is left half-written.
    """
    data = read_bundle(bundle)
    try:
        return export_scene(scene_from_bundle(data), fmt, out_dir, overwrite, how_to_overwrite="tick Overwrite")
    except ExportError as exc:
        raise BundleError(str(exc)) from None
