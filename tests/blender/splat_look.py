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


def import_view(bpy, bundle: Path) -> tuple:
    """Import the bundle with only its splats rendering, in photo colours, seen from camera 0 at WIDTH x HEIGHT;
    returns the engine request of that view, (K, cam_to_world, width, height)."""
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    root = next(c for c in bpy.data.collections if c.get("panst3r_result"))
    scene = bpy.context.scene
    for ob in scene.objects:
        ob.hide_render = "segment" in ob
    _addon_module("importers.splats").set_splats_visible(bpy.context, True)
    scene.panst3r.display = "PHOTO"
    camera = next(ob for ob in scene.objects if ob.type == "CAMERA" and ob.name.endswith("IMG_0001"))
    _addon_module("importers.cameras").use_camera(scene, camera)
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    return _addon_module("operators.render_view").camera_request(scene, camera, root)


def render_cycles(bpy, path: Path, samples: int = SAMPLES) -> np.ndarray:
    """uint8 [H, W, 3] Cycles render of the current scene over black (Standard view, no denoiser)."""
    from blender_addon.bundle.png import read_png

    scene = bpy.context.scene
    scene.world = None  # black, as the engine's background
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device, cycles.samples, cycles.use_denoising, cycles.seed = "CPU", samples, False, 0
    cycles.use_adaptive_sampling = False
    cycles.transparent_max_bounces = BOUNCES
    scene.render.film_transparent = False
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGB"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return read_png(path)[..., :3]


def render_engine(bundle: Path, request: tuple, linear_light: bool = False) -> np.ndarray:
    """uint8 [H, W, 3] engine render of the request (``render_view``, as the add-on's button gets it).

    linear_light: composite in linear light, as Blender does (colours decoded from sRGB before blending, the
    result encoded after), instead of in sRGB values as the engine does; compares the shapes and falloff of the
    splats without the difference of blending spaces.
    """
    import torch

    from panst3r_engine.splats import render_view
    from panst3r_engine.splats.export import read_splats_ply
    from panst3r_engine.splats.model import rgb_to_sh0, sh0_to_rgb
    from panst3r_engine.splats.render import render

    if not linear_light:
        return np.asarray(render_view(bundle, *request)[0])
    model = read_splats_ply(bundle / "splats.ply")
    rgb = sh0_to_rgb(model.sh0[:, 0]).clamp(0, 1).double().numpy()
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    model.sh0 = rgb_to_sh0(torch.tensor(linear, dtype=torch.float32))[:, None]
    out = render(model, *request).rgb.astype(np.float64)
    encoded = np.where(out <= 0.0031308, out * 12.92, 1.055 * np.clip(out, 0, None) ** (1 / 2.4) - 0.055)
    return np.round(np.clip(encoded, 0, 1) * 255).astype(np.uint8)
