"""Per-scene settings of the panel: photos, job options, display."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .operators.meshes import BAKE_DESCRIPTION, TEXTURE_SIZE_ITEMS

VOCABULARIES = [
    ("scannetpp", "ScanNet++ (100)", "Indoor scenes: 100 classes"),
    ("coco", "COCO (133)", "Everyday things and stuff: 133 classes"),
    ("ade20k", "ADE20K (150)", "Indoor and outdoor scenes: 150 classes"),
    ("checkpoint", "Checkpoint's Classes", "The classes a checkpoint made with train was trained on (Weights > File)"),
    ("CUSTOM", "Custom", "Your own class names"),
]
POSTPROCESS = [
    ("AUTO", "Automatic", "The checkpoint's default"),
    ("standard_v1", "Standard v1", "Greedy mask merging, as in PanSt3R v1"),
    ("standard_v2", "Standard v2", "Mask merging with multi-view consistency (v2)"),
    ("qubo", "QUBO", "Global selection of masks by quadratic optimisation"),
]
# the engine's limits (panst3r_engine/pipeline/options.py; a test keeps them equal); 0 means Auto
MAX_KEYFRAMES = 10_000
MAX_SPLAT_STEPS = 100_000
MAX_VIDEO_FRAMES = 2000
MAX_VIDEO_FPS = 120.0


def _point_objects(scene):
    from .importers.points import MODIFIER

    return [ob for ob in scene.objects if ob.modifiers.get(MODIFIER) is not None]


def _update_point_size(self, context) -> None:
    from .importers.points import RADIUS, set_modifier_input

    for ob in _point_objects(context.scene):
        set_modifier_input(ob, RADIUS, self.point_size)


def _update_min_conf(self, context) -> None:
    from .importers.points import MIN_CONF, set_modifier_input

    for ob in _point_objects(context.scene):
        set_modifier_input(ob, MIN_CONF, self.min_conf)


def _update_display(self, context) -> None:
    from .importers.materials import set_display_mode

    set_display_mode(self.display)


class PanSt3RPhoto(bpy.types.PropertyGroup):
    path: StringProperty(name="File", subtype="FILE_PATH", description="Photo file sent to the engine")
    image: PointerProperty(
        name="Image",
        type=bpy.types.Image,
        description="Image of this .blend sent to the engine (saved to a temporary file)",
    )


class PanSt3RSettings(bpy.types.PropertyGroup):
    photos: CollectionProperty(type=PanSt3RPhoto, name="Photos", description="Photos sent to the engine")
    photo_index: IntProperty(name="Active Photo", description="Selected row of the photo list")
    folder: StringProperty(
        name="Folder", subtype="DIR_PATH", description="Every image in this folder is sent too (in name order)"
    )
    keyframes: IntProperty(
        name="Keyframes",
        default=0,
        min=0,
        max=MAX_KEYFRAMES,
        soft_max=50,
        description="Photos that build the scene memory; 0 = Auto (all photos, at most 50)",
    )
    video_frames: IntProperty(
        name="Video Frames",
        default=0,
        min=0,
        max=MAX_VIDEO_FRAMES,
        soft_max=200,
        description="Frames taken from each movie: the sharpest of every few, near-duplicates dropped; 0 = Auto (30)",
    )
    video_fps: FloatProperty(
        name="Video FPS",
        default=0.0,
        min=0.0,
        max=MAX_VIDEO_FPS,
        soft_max=10.0,
        description="Take this many frames per second of each movie instead of a count; 0 = Auto (use Video Frames)",
    )
    postprocess: EnumProperty(
        name="Post-processing", items=POSTPROCESS, default="AUTO", description="How the predicted masks become segments"
    )
    vocab: EnumProperty(
        name="Vocabulary",
        items=VOCABULARIES,
        default="scannetpp",
        description="The class names the engine labels segments with",
    )
    custom_vocab: StringProperty(
        name="Classes",
        default="floor, wall, chair, table",
        description="Class names separated by commas (used when no text is chosen)",
    )
    custom_vocab_text: PointerProperty(
        name="Class List", type=bpy.types.Text, description="A text with one class name per line (overrides the field)"
    )
    conf_threshold: FloatProperty(
        name="Confidence",
        default=3.0,
        min=1.0,
        soft_max=20.0,
        description="Keep points whose confidence is at least this (1 keeps all)",
    )
    splats: BoolProperty(
        name="Gaussian Splats", default=False, description="Also fit Gaussian splats (slower; for novel-view rendering)"
    )
    splat_steps: IntProperty(
        name="Splat Steps",
        default=0,
        min=0,
        max=MAX_SPLAT_STEPS,
        soft_max=30000,
        description="Optimisation steps of the splat fit; 0 = Auto: about 5 minutes on a CPU (at most 60,000 "
        "Gaussians, photos at 256 px), 2000 steps on a GPU",
    )
    point_size: FloatProperty(
        name="Point Size",
        default=0.01,
        min=0.0,
        soft_max=0.1,
        precision=4,
        subtype="DISTANCE",
        update=_update_point_size,
        description="Radius of the imported points, in scene units",
    )
    min_conf: FloatProperty(
        name="Hide Below",
        default=0.0,
        min=0.0,
        soft_max=20.0,
        update=_update_min_conf,
        description="Hide imported points whose confidence is below this value",
    )
    display: EnumProperty(
        name="Colour",
        default="SEMANTIC",
        update=_update_display,
        description="What the point colours show in Rendered and Material Preview modes",
        items=[
            ("SEMANTIC", "Class", "One colour per class"),
            ("INSTANCE", "Instance", "One colour per segment"),
            ("PHOTO", "Photo", "The colour of the photos"),
        ],
    )
    scale: FloatProperty(
        name="Scale",
        default=1.0,
        min=1e-4,
        soft_max=100.0,
        description="Multiply every imported distance (the network's units are roughly metres)",
    )
    layout_proxies: BoolProperty(
        name="Layout Proxies",
        default=False,
        description="On import, also create one box empty per instance (upright, turned to fit its points)",
    )
    meshes: BoolProperty(
        name="Meshes",
        default=False,
        description="On import, also make a mesh with the photo colours from every labelled instance "
        "(as Make Mesh does; slower)",
    )
    bake_texture: BoolProperty(name="Bake Texture", default=False, description=BAKE_DESCRIPTION)
    texture_size: EnumProperty(
        name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="1024", description="Width and height of each texture"
    )
    level_floor: BoolProperty(
        name="Level on Floor",
        default=True,
        description="Rotate the scene so points of a floor, rug or carpet class are "
        "horizontal, with the floor at height 0",
    )

    def vocabulary(self) -> str | list[str]:
        """The preset name, or the custom class names."""
        if self.vocab != "CUSTOM":
            return self.vocab
        if self.custom_vocab_text is not None:
            text = self.custom_vocab_text.as_string()
            names = [line.strip() for line in text.splitlines()]
        else:
            names = [part.strip() for part in self.custom_vocab.replace("\n", ",").split(",")]
        return list(dict.fromkeys(n for n in names if n))


classes = (PanSt3RPhoto, PanSt3RSettings)


def register_properties() -> None:
    bpy.types.Scene.panst3r = PointerProperty(
        type=PanSt3RSettings, name="PanSt3R", description="PanSt3R panel settings"
    )


def unregister_properties() -> None:
    if hasattr(bpy.types.Scene, "panst3r"):
        del bpy.types.Scene.panst3r
