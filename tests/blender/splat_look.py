"""The splat-look scene: Cycles' render of the imported splat layer against the engine's render of the same camera.

A bundle (tests/bundle_utils.py) gains a ``splats.ply`` written by the engine's writer: ``COUNT`` Gaussians with
seeded random anisotropic scales, rotations, opacities and colours in front of the reference camera. The add-on
imports it, the reference camera becomes the scene camera at ``WIDTH`` x ``HEIGHT``, and the engine renders the
view the add-on would ask it for (``camera_request`` -> ``render_view``, the torch rasteriser on a CPU). Cycles
renders only the splat layer over black (the engine's background), view transform Standard, no denoiser, with
enough transparent bounces for every overlap (a setting of this measurement scene only). The score is the PSNR of
the two 8-bit RGB images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COUNT, WIDTH, HEIGHT, SAMPLES, BOUNCES = 120, 160, 120, 16, 32


def write_look_bundle(folder: Path, seed: int = 0) -> Path:
    """The synthetic bundle plus a splats.ply of ``COUNT`` seeded Gaussians 2.5-6 units in front of camera 0."""
    import torch

    from panst3r_engine.bundle.write import write_bundle
    from panst3r_engine.splats.export import write_splats_ply
    from panst3r_engine.splats.model import SplatModel, rgb_to_sh0
    from tests.bundle_utils import SEGMENT_CLASSES, make_bundle_inputs

    inputs = make_bundle_inputs()
    cam = inputs[0]["cameras"][0]
    reference, K = np.array(cam["cam_to_world"]), np.array(cam["K"])
    rng = np.random.default_rng(seed)
    depth = rng.uniform(2.5, 6.0, COUNT)
    half = np.array([K[0, 2] / K[0, 0], K[1, 2] / K[1, 1]])  # tan of the half field of view
    local = np.concatenate([rng.uniform(-0.9, 0.9, (COUNT, 2)) * half * depth[:, None], depth[:, None]], 1)
    means = local @ reference[:3, :3].T + reference[:3, 3]
    sigma = np.exp(rng.uniform(np.log(0.03), np.log(0.3), (COUNT, 3)))
    segments = np.array(list(SEGMENT_CLASSES))[rng.integers(0, len(SEGMENT_CLASSES), COUNT)]
    model = SplatModel(
        means=torch.tensor(means, dtype=torch.float32),
        scales=torch.tensor(np.log(sigma), dtype=torch.float32),
        quats=torch.tensor(rng.normal(size=(COUNT, 4)), dtype=torch.float32),
        opacities=torch.logit(torch.tensor(rng.uniform(0.3, 0.95, COUNT), dtype=torch.float32)),
        sh0=rgb_to_sh0(torch.tensor(rng.uniform(0.1, 0.95, (COUNT, 3)), dtype=torch.float32))[:, None],
        shN=torch.zeros(COUNT, 0, 3),
        segment=torch.tensor(segments, dtype=torch.int32),
        class_id=torch.tensor([SEGMENT_CLASSES[int(s)] for s in segments], dtype=torch.int32),
    )
    folder.mkdir(parents=True, exist_ok=True)
    ply = write_splats_ply(model, folder / "splats.ply")
    return write_bundle(folder / "bundle", *inputs, extra_files={"splats.ply": ply})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _addon_module(name: str):
    """A submodule of the enabled add-on (installed extension or source folder)."""
    import importlib
    import sys

    packages = ("bl_ext.user_default.panst3r", "blender_addon")
    package = next(p for p in packages if f"{p}.importers.splats" in sys.modules)
    return importlib.import_module(f"{package}.{name}")


def import_view(bpy, bundle: Path, stem: str = "IMG_0001", size: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple:
    """Import the bundle with only its splats rendering, in photo colours, seen from the camera of photo ``stem``
    at ``size``; returns the engine request of that view, (K, cam_to_world, width, height)."""
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    root = next(c for c in bpy.data.collections if c.get("panst3r_result"))
    scene = bpy.context.scene
    for ob in scene.objects:
        ob.hide_render = "segment" in ob
    _addon_module("importers.splats").set_splats_visible(bpy.context, True)
    scene.panst3r.display = "PHOTO"
    camera = next(ob for ob in scene.objects if ob.type == "CAMERA" and ob.name.endswith(stem))
    _addon_module("importers.cameras").use_camera(scene, camera)
    scene.render.resolution_x, scene.render.resolution_y = size
    return _addon_module("operators.render_view").camera_request(scene, camera, root)


def eevee_engine(bpy) -> str:
    """EEVEE's engine name: ``BLENDER_EEVEE_NEXT`` in Blender 4.2-4.4, ``BLENDER_EEVEE`` again since 4.5."""
    items = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


def render_cycles(bpy, path: Path, samples: int = SAMPLES, background=(0.0, 0.0, 0.0), engine: str = "CYCLES"):
    """uint8 [H, W, 3] Cycles render of the current scene (Standard view, no denoiser) over the engine's
    background colour (sRGB 0-1; black: no world).

    engine: "EEVEE" renders with EEVEE instead (``samples`` anti-aliasing samples; the splat material is alpha
        blended, sorted per object); headless it needs an OpenGL driver (Mesa's software one works).
    """
    from blender_addon.bundle.png import read_png
    from blender_addon.importers.convert import srgb_to_linear

    scene = bpy.context.scene
    scene.world = None
    if any(background):
        scene.world = bpy.data.worlds.new("engine background")
        if scene.world.node_tree is None:  # Blender 4.x
            scene.world.use_nodes = True
        colour = srgb_to_linear(np.asarray(background, np.float64))
        scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (*colour, 1.0)
    if engine == "EEVEE":
        scene.render.engine = eevee_engine(bpy)
        scene.eevee.taa_render_samples = samples
    else:
        scene.render.engine = "CYCLES"
        cycles = scene.cycles
        cycles.device, cycles.samples, cycles.use_denoising, cycles.seed = "CPU", samples, False, 0
        cycles.use_adaptive_sampling = False
        cycles.transparent_max_bounces = cycles.min_transparent_bounces = BOUNCES  # no random termination
    scene.render.film_transparent = False
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGB"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return read_png(path)[..., :3]


def old_look(bpy) -> None:
    """Turn the imported splat layer back into the solid ellipsoids of the first release: Size 2, an
    icosahedron, alpha = opacity (the falloff's exponent set to 0)."""
    splats = _addon_module("importers.splats")
    ob = next(o for o in bpy.data.objects if splats.MODIFIER in o.modifiers)
    ob.data.materials[0].node_tree.nodes[splats.FALLOFF_NODE].inputs[1].default_value = 0.0
    splats.set_splats_input(ob, splats.SIZE, 2.0)
    group = ob.modifiers[splats.MODIFIER].node_group
    next(n for n in group.nodes if n.bl_idname == "GeometryNodeMeshIcoSphere").inputs["Subdivisions"].default_value = 1


def render_engine(bundle: Path, request: tuple, linear_light: bool = False) -> np.ndarray:
    """uint8 [H, W, 3] engine render of the request (``render_view``, as the add-on's button gets it).

    linear_light: composite in linear light, as Blender does (colours decoded from sRGB before blending, the
    result encoded after) and with the DC colour only (the add-on reads no view-dependent colour), instead of
    in sRGB values as the engine does; compares the shapes and falloff of the splats without those differences.
    """
    import torch

    from panst3r_engine.splats import render_view
    from panst3r_engine.splats.export import read_splats_ply
    from panst3r_engine.splats.model import rgb_to_sh0, sh0_to_rgb
    from panst3r_engine.splats.render import render

    if not linear_light:
        return np.asarray(render_view(bundle, *request)[0])
    model = read_splats_ply(bundle / "splats.ply")

    def decode(srgb: torch.Tensor) -> torch.Tensor:
        srgb = srgb.double().clamp(0, 1)
        return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).float()

    model.sh0 = rgb_to_sh0(decode(sh0_to_rgb(model.sh0[:, 0])))[:, None]
    model.background = decode(model.background)
    model.shN = model.shN[:, :0]  # the DC colour only, as the add-on reads it
    out = render(model, *request).rgb.astype(np.float64)
    encoded = np.where(out <= 0.0031308, out * 12.92, 1.055 * np.clip(out, 0, None) ** (1 / 2.4) - 0.055)
    return np.round(np.clip(encoded, 0, 1) * 255).astype(np.uint8)
