"""Build a :class:`RoomLayout` in Blender and render photos plus ground-truth passes with Cycles on the CPU.

Every function imports ``bpy`` itself, so this module imports without Blender.
Two renders per view:

- the *photo*: path traced with ``samples`` and the usual 1.5 px pixel filter
  (anti-aliased, optionally denoised), written as an 8-bit PNG;
- the *data* render: 1 sample with a 0.01 px filter, so each pixel's single
  camera ray passes through the pixel centre. Cycles writes depth and index
  passes from the first sample only (never blended), so Depth (planar z),
  Object Index (= instance id via ``Object.pass_index``) and Material Index
  (= class id via ``Material.pass_index``) are exact per pixel. They go to a
  multilayer EXR read with the OpenImageIO module that ships inside bpy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.eval.camera_conventions import opencv_to_blender
from panst3r_engine.eval.scene_layout import MaterialSpec, Part, RoomLayout, SceneObject

NO_HIT_DEPTH = 1e9  # Cycles writes 1e10 for rays that leave the scene


class BlenderUnavailable(PanSt3RError):
    """bpy (Blender as a Python module) is not importable here."""

    code = "blender_unavailable"


def require_bpy():
    """Import bpy or raise with the install command (bpy needs Python 3.11)."""
    try:
        import bpy  # noqa: PLC0415
    except ImportError as exc:
        raise BlenderUnavailable(
            f"Blender as a module is needed to render synthetic scenes: pip install bpy==5.0.1 "
            f"(Python 3.11 only; this is {sys.version_info.major}.{sys.version_info.minor}): {exc}"
        ) from exc
    return bpy


def reset_scene():
    """Empty factory-default file with Cycles on the CPU; returns the scene."""
    bpy = require_bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.view_settings.view_transform = "Standard"
    return scene


# --------------------------------------------------------------------------- geometry and materials


def _mesh_from_parts(name: str, parts: list[Part]):
    """One mesh holding every primitive of an object, so the object is one instance."""
    bpy = require_bpy()
    import bmesh  # noqa: PLC0415
    from mathutils import Matrix  # noqa: PLC0415

    bm = bmesh.new()
    for p in parts:
        if p.kind == "box":
            m = Matrix.Translation(p.center) @ Matrix.Diagonal((*p.size, 1.0))
            bmesh.ops.create_cube(bm, size=1.0, matrix=m)
        else:
            bmesh.ops.create_cone(
                bm,
                cap_ends=True,
                segments=20,
                radius1=p.size[0],
                radius2=p.size[1],
                depth=p.size[2],
                matrix=Matrix.Translation(p.center),
            )
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _pattern_node(nodes, spec: MaterialSpec):
    """Procedural texture node and the name of its scalar output."""
    if spec.pattern == "wave":
        n = nodes.new("ShaderNodeTexWave")
        n.inputs["Scale"].default_value = spec.scale
        n.inputs["Distortion"].default_value = 4.0
        return n, "Fac"
    if spec.pattern == "checker":
        n = nodes.new("ShaderNodeTexChecker")
        n.inputs["Scale"].default_value = spec.scale
        return n, "Fac"
    if spec.pattern == "voronoi":
        n = nodes.new("ShaderNodeTexVoronoi")
        n.inputs["Scale"].default_value = spec.scale
        return n, "Distance"
    n = nodes.new("ShaderNodeTexNoise")
    n.inputs["Scale"].default_value = spec.scale
    n.inputs["Detail"].default_value = 6.0
    return n, "Fac"


def make_material(name: str, spec: MaterialSpec, class_id: int):
    """Principled material: pattern -> two-colour ramp -> base colour; ``pass_index`` = class id."""
    bpy = require_bpy()
    mat = bpy.data.materials.new(name)
    mat.pass_index = class_id
    mat.diffuse_color = (*spec.color_a, 1.0)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    coords = nodes.new("ShaderNodeTexCoord")
    tex, out = _pattern_node(nodes, spec)
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*spec.color_b, 1.0)
    ramp.color_ramp.elements[1].color = (*spec.color_a, 1.0)
    links.new(coords.outputs["Object"], tex.inputs["Vector"])
    links.new(tex.outputs[out], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = spec.roughness
    if spec.emission > 0:
        links.new(ramp.outputs["Color"], bsdf.inputs["Emission Color"])
        bsdf.inputs["Emission Strength"].default_value = spec.emission
    return mat


def add_object(scene, obj: SceneObject):
    """Link one layout object; ``pass_index`` carries its instance id into the Object Index pass."""
    bpy = require_bpy()
    mesh = _mesh_from_parts(obj.name, obj.parts)
    mesh.materials.append(make_material(f"{obj.name}_{obj.instance_id}", obj.material, obj.class_id))
    ob = bpy.data.objects.new(f"{obj.name}_{obj.instance_id}", mesh)
    ob.location = obj.location
    ob.rotation_euler = (0.0, 0.0, obj.yaw)
    ob.pass_index = obj.instance_id
    ob["class_name"] = obj.class_name
    ob["class_id"] = obj.class_id
    scene.collection.objects.link(ob)
    return ob


def add_lights(scene, layout: RoomLayout) -> None:
    bpy = require_bpy()
    for i, spec in enumerate(layout.lights):
        light = bpy.data.lights.new(f"light_{i}", type=spec.kind)
        light.energy = spec.energy
        light.color = spec.color
        if spec.kind == "AREA":
            light.size = spec.size
        ob = bpy.data.objects.new(f"light_{i}", light)
        ob.location = spec.location  # area lights face -z by default: down from the ceiling
        scene.collection.objects.link(ob)


def add_cameras(scene, layout: RoomLayout) -> list:
    """One Blender camera per view from the layout's OpenCV poses and the half-pixel shift in K."""
    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    w, h = layout.width, layout.height
    m = float(max(w, h))
    cams = []
    for i, c2w in enumerate(layout.cam_to_world):
        cam = bpy.data.cameras.new(f"camera_{i}")
        cam.sensor_fit = "HORIZONTAL"
        cam.sensor_width = layout.sensor_mm
        cam.lens = layout.lens_mm
        cam.shift_x = (w / 2.0 - 0.5 - layout.K[0, 2]) / m  # inverse of scene_layout.blender_intrinsics
        cam.shift_y = (layout.K[1, 2] - h / 2.0 + 0.5) / m
        cam.clip_start, cam.clip_end = 0.02, 100.0
        ob = bpy.data.objects.new(f"camera_{i}", cam)
        ob.matrix_world = Matrix(opencv_to_blender(c2w).tolist())
        scene.collection.objects.link(ob)
        cams.append(ob)
    return cams


def build_scene(layout: RoomLayout):
    """Fresh Blender scene holding the layout; returns (scene, camera objects)."""
    scene = reset_scene()
    for obj in layout.objects:
        add_object(scene, obj)
    add_lights(scene, layout)
    cams = add_cameras(scene, layout)
    scene.render.resolution_x, scene.render.resolution_y = layout.width, layout.height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    require_bpy().context.view_layer.update()
    return scene, cams


# --------------------------------------------------------------------------- rendering


def _set_photo_mode(scene, samples: int, denoise: bool, bounces: int, seed: int) -> None:
    c = scene.cycles
    c.samples = max(1, int(samples))
    c.use_adaptive_sampling = False
    c.filter_width = 1.5
    c.use_denoising = bool(denoise)
    c.max_bounces = c.diffuse_bounces = bounces
    c.glossy_bounces = min(bounces, 1)
    c.transmission_bounces = c.volume_bounces = c.transparent_max_bounces = 0
    c.caustics_reflective = c.caustics_refractive = False
    c.seed = int(seed)
    vl = scene.view_layers[0]
    vl.use_pass_z = vl.use_pass_object_index = vl.use_pass_material_index = False
    s = scene.render.image_settings
    s.media_type = "IMAGE"
    s.file_format, s.color_mode, s.color_depth = "PNG", "RGB", "8"


def _set_data_mode(scene) -> None:
    c = scene.cycles
    c.samples, c.filter_width, c.use_denoising = 1, 0.01, False
    c.max_bounces = c.diffuse_bounces = c.glossy_bounces = 0
    vl = scene.view_layers[0]
    vl.use_pass_z = vl.use_pass_object_index = vl.use_pass_material_index = True
    s = scene.render.image_settings
    s.media_type = "MULTI_LAYER_IMAGE"
    s.file_format, s.color_depth, s.exr_codec = "OPEN_EXR_MULTILAYER", "32", "ZIP"


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence Blender's per-render log lines, which it prints from C straight to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _render(scene, camera, filepath: Path) -> None:
    bpy = require_bpy()
    scene.camera = camera
    scene.render.filepath = str(filepath)
    with _quiet_stdout():
        bpy.ops.render.render(write_still=True)
    if not filepath.is_file():
        raise RuntimeError(f"Blender did not write {filepath}")


def render_photos(scene, cams: list, out_dir: Path, samples: int, denoise: bool, bounces: int, seed: int) -> list[Path]:
    """Anti-aliased photo per camera (PNG paths, in camera order)."""
    _set_photo_mode(scene, samples, denoise, bounces, seed)
    paths = []
    for i, cam in enumerate(cams):
        p = out_dir / f"photo_{i:03d}.png"
        _render(scene, cam, p)
        paths.append(p)
    return paths


def render_data(scene, cams: list, out_dir: Path) -> list[Path]:
    """Depth and index passes per camera (multilayer EXR paths, in camera order)."""
    _set_data_mode(scene)
    paths = []
    for i, cam in enumerate(cams):
        p = out_dir / f"data_{i:03d}.exr"
        _render(scene, cam, p)
        paths.append(p)
    return paths


def _oiio():
    """The OpenImageIO Python module bundled inside the bpy wheel."""
    bpy = require_bpy()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = Path(bpy.utils.resource_path("LOCAL")) / "python" / "lib" / version / "site-packages"
    if str(site) not in sys.path and site.is_dir():
        sys.path.append(str(site))
    try:
        import OpenImageIO  # noqa: PLC0415
    except ImportError as exc:
        raise BlenderUnavailable(f"OpenImageIO from the bpy wheel not found under {site}: {exc}") from exc
    return OpenImageIO


def read_data_passes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``depth`` float32, ``instance`` and ``semantic`` int64 ``[H, W]`` from a data-render EXR (rows top first)."""
    oiio = _oiio()
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise OSError(f"cannot open {path}: {oiio.geterror()}")
    channels: dict[str, np.ndarray] = {}
    try:
        sub = 0
        while inp.seek_subimage(sub, 0):
            spec = inp.spec()
            px = inp.read_image(sub, 0, 0, spec.nchannels, "float")
            for c, name in enumerate(spec.channelnames):
                channels[name] = np.asarray(px[..., c] if px.ndim == 3 else px, np.float32)
            sub += 1
    finally:
        inp.close()

    def find(*keys: str) -> np.ndarray:
        for name, a in channels.items():
            if any(k in name for k in keys):
                return a
        raise KeyError(f"{path}: none of {keys} among channels {sorted(channels)}")

    depth = find("Depth.Z", ".Z")
    inst = np.rint(find("Object Index", "IndexOB")).astype(np.int64)
    sem = np.rint(find("Material Index", "IndexMA")).astype(np.int64)
    hit = (inst > 0) & (depth < NO_HIT_DEPTH)
    return {
        "depth": np.where(hit, depth, 0.0).astype(np.float32),
        "instance": np.where(hit, inst, 0),
        "semantic": np.where(hit, sem, 0),
    }


def camera_matrices(cams: list) -> list[tuple[np.ndarray, dict]]:
    """Each camera's Blender ``matrix_world`` and lens data, read back after rendering."""
    out = []
    for ob in cams:
        d = ob.data
        out.append(
            (
                np.array(ob.matrix_world, np.float64),
                {
                    "lens": d.lens,
                    "sensor_width": d.sensor_width,
                    "sensor_fit": d.sensor_fit,
                    "shift_x": d.shift_x,
                    "shift_y": d.shift_y,
                },
            )
        )
    return out
