"""The photo list: add files (photos or movies), images and movie clips of the .blend, remove; and turning it
into files for the engine.

A movie is sent to the engine as it is: the engine takes its frames (the sharpest of every few, near-duplicates
dropped; the panel's Video Frames / Video FPS), so a job can be a phone video, photos, or both.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty

from ..bundle.png import write_png

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
MOVIE_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}  # containers the engine opens
_SKIP_IMAGES = {"Render Result", "Viewer Node"}


class PhotoError(RuntimeError):
    """A photo that cannot be sent, as a sentence."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.\-]", "_", name).strip("._") or "image"


def image_to_file(image: bpy.types.Image, tmp_dir: Path) -> Path:
    """A file holding the image: its own file, or a temporary copy when packed, generated or edited."""
    path = Path(bpy.path.abspath(image.filepath, library=image.library)) if image.filepath else None
    if image.packed_file is None and not image.is_dirty and path is not None and path.is_file():
        return path
    tmp_dir.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(Path(image.name).stem)
    if image.packed_file is not None and not image.is_dirty:
        suffix = path.suffix.lower() if path is not None and path.suffix.lower() in IMAGE_SUFFIXES else ".png"
        out = tmp_dir / f"{stem}{suffix}"
        out.write_bytes(image.packed_file.data)
        return out
    out = tmp_dir / f"{stem}.png"
    write_png(out, _image_pixels(image))
    return out


def _image_pixels(image: bpy.types.Image) -> np.ndarray:
    """uint8 [H, W, 4] of an image's current pixels, top row first, sRGB-encoded."""
    width, height = image.size
    if width == 0 or height == 0 or not image.has_data:
        raise PhotoError(f"the image {image.name!r} has no pixels; load or render it first")
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    rgba = pixels.reshape(height, width, 4)[::-1]
    if image.is_float:  # float buffers hold scene-linear values
        rgb = rgba[..., :3]
        rgba[..., :3] = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.maximum(rgb, 0) ** (1 / 2.4) - 0.055)
    return (np.clip(rgba, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def is_movie(path: str) -> bool:
    return Path(path).suffix.lower() in MOVIE_SUFFIXES


def has_movie(settings) -> bool:
    """Whether the list holds a movie (the panel then shows the video options and sends them)."""
    return any(item.image is None and is_movie(item.path) for item in settings.photos)


def describe_files(paths: list[Path]) -> str:
    """'3 photos', '1 movie' or '3 photos and 1 movie'."""
    movies = sum(is_movie(str(p)) for p in paths)
    photos = len(paths) - movies
    parts = [f"{photos} photo{'s' * (photos != 1)}"] if photos or not movies else []
    parts += [f"{movies} movie{'s' * (movies != 1)}"] if movies else []
    return " and ".join(parts)


def clip_file(clip: bpy.types.MovieClip) -> Path:
    """The movie file of a movie clip, or a :class:`PhotoError` that says what to do instead."""
    if clip.source != "MOVIE":
        raise PhotoError(f"the clip {clip.name!r} is an image sequence; add its images with Add Photos instead")
    path = Path(bpy.path.abspath(clip.filepath, library=clip.library))
    if not path.is_file():
        raise PhotoError(f"the movie {path} of the clip {clip.name!r} does not exist; relocate the clip first")
    if not is_movie(str(path)):
        kinds = ", ".join(sorted(MOVIE_SUFFIXES))
        raise PhotoError(f"the clip {clip.name!r} is a {path.suffix or 'file'} movie; the engine reads {kinds}")
    return path


def folder_photos(folder: str) -> list[Path]:
    path = Path(bpy.path.abspath(folder))
    if not path.is_dir():
        raise PhotoError(f"the photo folder {path} does not exist")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def resolve_photos(settings, tmp_root: Path) -> list[Path]:
    """Every photo of the panel as a file path (list entries, then the folder), without duplicates."""
    tmp_dir = tmp_root / secrets.token_hex(4)
    found: list[Path] = []
    for item in settings.photos:
        if item.image is not None:
            found.append(image_to_file(item.image, tmp_dir))
        elif item.path:
            path = Path(bpy.path.abspath(item.path))
            if not path.is_file():
                raise PhotoError(f"the photo {path} does not exist; remove it from the list")
            found.append(path)
    if settings.folder:
        found.extend(folder_photos(settings.folder))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise PhotoError("no photos are chosen; add photo or movie files, a folder or images of this .blend")
    return unique


class PANST3R_OT_add_photos(bpy.types.Operator):
    """Add photo or movie files to the list (the engine takes a movie's frames)"""

    bl_idname = "panst3r.add_photos"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}

    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_movie: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        settings = context.scene.panst3r
        known = {item.path for item in settings.photos}
        added = 0
        for entry in self.files:
            path = os.path.join(self.directory, entry.name)
            if entry.name and Path(path).suffix.lower() in IMAGE_SUFFIXES | MOVIE_SUFFIXES and path not in known:
                settings.photos.add().path = path
                known.add(path)
                added += 1
        if not added:
            self.report({"WARNING"}, "No new image or movie files were selected")
            return {"CANCELLED"}
        settings.photo_index = len(settings.photos) - 1
        return {"FINISHED"}


def _image_items(self, context):
    items = [("__ALL__", "All Images", "Every image of this .blend")]
    items += [(im.name, im.name, "") for im in bpy.data.images if im.name not in _SKIP_IMAGES]
    _image_items.cache = items  # Blender needs the strings kept alive
    return items


class PANST3R_OT_add_blend_images(bpy.types.Operator):
    """Add images of this .blend to the photo list (packed or generated ones are saved to temporary files)"""

    bl_idname = "panst3r.add_blend_images"
    bl_label = "Add Images from .blend"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "image"

    image: EnumProperty(name="Image", items=_image_items, description="The image to add, or all of them")

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        settings = context.scene.panst3r
        chosen = [
            im
            for im in bpy.data.images
            if im.name not in _SKIP_IMAGES and (self.image == "__ALL__" or im.name == self.image)
        ]
        present = {item.image for item in settings.photos if item.image is not None}
        for image in chosen:
            if image not in present:
                settings.photos.add().image = image
        if not chosen:
            self.report({"WARNING"}, "This .blend has no images to add")
            return {"CANCELLED"}
        return {"FINISHED"}


def _clip_items(self, context):
    items = [(clip.name, clip.name, bpy.path.basename(clip.filepath)) for clip in bpy.data.movieclips]
    _clip_items.cache = items  # Blender needs the strings kept alive
    return items


class PANST3R_OT_add_movie_clip(bpy.types.Operator):
    """Add the movie file of a movie clip of this .blend to the photo list (the engine takes its frames)"""

    bl_idname = "panst3r.add_movie_clip"
    bl_label = "Add Movie Clip"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "clip"

    clip: EnumProperty(name="Movie Clip", items=_clip_items, description="The movie clip whose file is added")

    def invoke(self, context, event):
        if not bpy.data.movieclips:
            self.report({"WARNING"}, "This .blend has no movie clips; open one in the Movie Clip Editor first")
            return {"CANCELLED"}
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        clip = bpy.data.movieclips.get(self.clip)
        if clip is None:
            self.report({"WARNING"}, "This .blend has no movie clip to add")
            return {"CANCELLED"}
        try:
            path = str(clip_file(clip))
        except PhotoError as exc:
            self.report({"ERROR"}, str(exc)[:1].upper() + str(exc)[1:])
            return {"CANCELLED"}
        settings = context.scene.panst3r
        known = {str(Path(bpy.path.abspath(item.path))) for item in settings.photos if item.path}
        if path in known:
            self.report({"INFO"}, f"{bpy.path.basename(path)} is already in the list")
            return {"CANCELLED"}
        settings.photos.add().path = path
        settings.photo_index = len(settings.photos) - 1
        return {"FINISHED"}


class PANST3R_OT_remove_photo(bpy.types.Operator):
    """Remove a photo from the list (all of them with Clear)"""

    bl_idname = "panst3r.remove_photo"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Index", default=-1, description="Row to remove; -1 = the selected row")
    clear: BoolProperty(name="Clear", default=False, description="Remove every photo")

    def execute(self, context):
        settings = context.scene.panst3r
        if self.clear:
            settings.photos.clear()
            return {"FINISHED"}
        index = self.index if self.index >= 0 else settings.photo_index
        if not 0 <= index < len(settings.photos):
            self.report({"WARNING"}, "No photo is selected")
            return {"CANCELLED"}
        settings.photos.remove(index)
        settings.photo_index = min(index, len(settings.photos) - 1)
        return {"FINISHED"}


classes = (PANST3R_OT_add_photos, PANST3R_OT_add_blend_images, PANST3R_OT_add_movie_clip, PANST3R_OT_remove_photo)
