"""Make Mesh's optional texture: UV-unwrap a mesh and bake its ``rgb`` colour attribute into a packed image.

The unwrap is Blender's Smart UV Project (run on a temporary object, alone in Edit Mode, so nothing else the
user selected is touched). The bake is a numpy rasterisation of the UV triangles: every texel centre inside a
triangle gets the barycentric blend of its three vertex colours (what Cycles' Emission bake computes, without
a render engine: deterministic and several times faster, see benchmarks/bench_bake.py). Empty texels are then
filled so no seam shows: two rings of neighbour averages round every island (what bilinear filtering reads),
then a pull-push fill from a mip pyramid (Gortler et al., "The Lumigraph", SIGGRAPH 1996) so mipmaps of the
texture do not bleed background into the islands either.

The image is stored as 8-bit sRGB and packed into the .blend; the mesh gets a Principled BSDF material whose
Base Color reads it, the form glTF and FBX exporters write as the base colour texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .materials import COLOR_ATTRIBUTE

TEXTURE_SIZES = (512, 1024, 2048, 4096)
MAX_TEXTURE_PIXELS = 64 * 1024 * 1024  # per operation: 64 textures of 1024², 16 of 2048² (256 MB as 8-bit RGBA)
ISLAND_MARGIN_PIXELS = 4  # gap between UV islands, in texels
RING_PASSES = 2  # neighbour-average rings round each island before the pull-push fill
CHUNK_CANDIDATES = 1 << 16  # texel candidates rasterised at once (small enough for the CPU cache: 2x faster than 4 M)
UV_MAP = "UVMap"
TEXTURE_PROPERTY = "mesh_texture"


class BakeError(ValueError):
    """A texture that cannot be baked, as a sentence the user can act on."""


@dataclass(frozen=True)
class Baked:
    """What one bake created (removed together if a later step fails)."""

    image: bpy.types.Image
    material: bpy.types.Material


def check_budget(count: int, size: int) -> None:
    """Refuse before anything is made when ``count`` textures of ``size``² would exceed the pixel budget."""
    if size not in TEXTURE_SIZES:
        raise BakeError(f"a texture size of {size} is not offered; choose one of {', '.join(map(str, TEXTURE_SIZES))}")
    pixels = count * size * size
    if pixels > MAX_TEXTURE_PIXELS:
        fits = MAX_TEXTURE_PIXELS // (size * size)
        raise BakeError(
            f"baking {count} textures of {size}×{size} needs {pixels / 2**20:.0f} megapixels "
            f"(at most {MAX_TEXTURE_PIXELS / 2**20:.0f}); choose a smaller Texture Size or at most {fits} instances"
        )


def rasterize(uv: np.ndarray, colour: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric colours of UV triangles at the texel centres of a ``size``² image.

    Args:
        uv: float [T, 3, 2] triangle corners in UV space (0-1; v up, as Blender stores images bottom row first).
        colour: float [T, 3, C] the corners' colours.
    Returns:
        image float32 [size, size, C] (row 0 is v = 0) and filled bool [size, size].
    """
    channels = colour.shape[-1]
    image = np.zeros((size, size, channels), np.float32)
    filled = np.zeros((size, size), bool)
    p = uv.astype(np.float64) * size - 0.5  # texel (x, y) has its centre at integer (x, y)
    colour = np.asarray(colour, np.float32)
    lo = np.maximum(np.ceil(p.min(1) - 1e-9), 0).astype(np.int64)
    hi = np.minimum(np.floor(p.max(1) + 1e-9), size - 1).astype(np.int64)
    extent = np.maximum(hi - lo + 1, 0)
    counts = extent[:, 0] * extent[:, 1]
    corners, lo, extent = p.astype(np.float32), lo.astype(np.int32), extent.astype(np.int32)
    tris = np.flatnonzero(counts)
    ends = np.cumsum(counts[tris])
    start = 0
    while start < len(tris):
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + CHUNK_CANDIDATES, "right")), start + 1)
        _rasterize_chunk(tris[start:stop], corners, colour, lo, extent, counts, image, filled)
        start = stop
    return image, filled


def _rasterize_chunk(tris, p, colour, lo, extent, counts, image, filled) -> None:
    n = counts[tris]
    tri = np.repeat(tris, n)
    k = np.arange(len(tri), dtype=np.int32) - np.repeat((np.cumsum(n) - n).astype(np.int32), n)  # index in the box
    width = extent[tri, 0]
    x, y = lo[tri, 0] + k % width, lo[tri, 1] + k // width
    a, e0, e1 = p[tris, 0], p[tris, 1] - p[tris, 0], p[tris, 2] - p[tris, 0]
    det = e0[:, 0] * e1[:, 1] - e1[:, 0] * e0[:, 1]
    inverse = np.repeat(np.where(np.abs(det) > 1e-12, 1.0 / np.where(det == 0, 1.0, det), 0.0).astype(np.float32), n)
    a, e0, e1 = np.repeat(a, n, 0), np.repeat(e0, n, 0), np.repeat(e1, n, 0)
    rx, ry = x.astype(np.float32) - a[:, 0], y.astype(np.float32) - a[:, 1]
    l1 = (rx * e1[:, 1] - e1[:, 0] * ry) * inverse
    l2 = (e0[:, 0] * ry - rx * e0[:, 1]) * inverse
    l0 = 1.0 - l1 - l2
    inside = (inverse != 0) & (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6)
    tri, x, y = tri[inside], x[inside], y[inside]
    weights = np.clip(np.stack([l0[inside], l1[inside], l2[inside]], 1), 0.0, 1.0)
    weights /= weights.sum(1, keepdims=True)
    corners = colour[tri]
    image[y, x] = weights[:, 0:1] * corners[:, 0] + weights[:, 1:2] * corners[:, 1] + weights[:, 2:3] * corners[:, 2]
    filled[y, x] = True


def _ring(image: np.ndarray, filled: np.ndarray) -> None:
    """Give every empty texel next to a filled one the mean of its filled 8-neighbours (in place)."""
    total = np.zeros_like(image)
    count = np.zeros(filled.shape, np.float32)
    padded = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
    weight = np.pad(filled.astype(np.float32), 1)
    h, w = filled.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                total += padded[dy : dy + h, dx : dx + w]
                count += weight[dy : dy + h, dx : dx + w]
    new = ~filled & (count > 0)
    image[new] = total[new] / count[new, None]
    filled |= new


def _pull_push(image: np.ndarray, filled: np.ndarray) -> None:
    """Fill every empty texel from the mean of the filled ones in ever larger blocks (in place; size a power of 2)."""
    if filled.all() or not filled.any():
        return
    h, w, c = image.shape
    if h < 2 or w < 2:
        return
    weight = filled.astype(np.float32).reshape(h // 2, 2, w // 2, 2).sum((1, 3))
    total = (image * filled[..., None]).reshape(h // 2, 2, w // 2, 2, c).sum((1, 3))
    coarse = total / np.maximum(weight, 1.0)[..., None]
    coarse_filled = weight > 0
    _pull_push(coarse, coarse_filled)
    up = coarse.repeat(2, 0).repeat(2, 1)
    image[~filled] = up[~filled]
    filled[:] = True


def fill_empty(image: np.ndarray, filled: np.ndarray) -> None:
    """Fill the texels no triangle covers, so bilinear filtering and mipmaps find island colours (in place)."""
    for _ in range(RING_PASSES):
        _ring(image, filled)
    _pull_push(image, filled)


def unwrap(context, mesh: bpy.types.Mesh, size: int) -> None:
    """Smart UV Project of the whole mesh into its ``UVMap`` layer, islands ``ISLAND_MARGIN_PIXELS`` apart.

    The mesh is put on a temporary object that is the only one selected and in Edit Mode; selection, active
    object and mode of the scene are restored afterwards.
    """
    if context.mode != "OBJECT":
        raise BakeError("a texture can only be baked in Object Mode; leave Edit Mode first")
    view_layer = context.view_layer
    temp = bpy.data.objects.new("PanSt3R unwrap", mesh)
    context.scene.collection.objects.link(temp)
    selected = [ob for ob in view_layer.objects if ob.select_get()]
    active = view_layer.objects.active
    try:
        for ob in selected:
            ob.select_set(False)
        temp.select_set(True)
        view_layer.objects.active = temp
        if not mesh.uv_layers:
            mesh.uv_layers.new(name=UV_MAP)
        with context.temp_override(active_object=temp, object=temp, selected_objects=[temp]):
            bpy.ops.object.mode_set(mode="EDIT")
            try:
                bpy.ops.mesh.select_all(action="SELECT")
                bpy.ops.uv.smart_project(island_margin=ISLAND_MARGIN_PIXELS / size, scale_to_bounds=False)
            finally:
                bpy.ops.object.mode_set(mode="OBJECT")
    finally:
        bpy.data.objects.remove(temp)
        for ob in selected:
            ob.select_set(True)
        view_layer.objects.active = active


def _corner_arrays(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """UVs float [T, 3, 2] and linear colours float [T, 3, 4] of the mesh's triangulated faces."""
    mesh.calc_loop_triangles()
    loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.uv.foreach_get("vector", uv)
    vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", vertex)
    rgba = np.empty(len(mesh.vertices) * 4, np.float32)
    mesh.color_attributes[COLOR_ATTRIBUTE].data.foreach_get("color", rgba)
    rgba = rgba.reshape(-1, 4)
    return uv.reshape(-1, 2)[loops].reshape(-1, 3, 2), rgba[vertex[loops]].reshape(-1, 3, 4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1) of linear values in 0-1."""
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.power(values, 1 / 2.4) - 0.055)


def texture_pixels(mesh: bpy.types.Mesh, size: int) -> np.ndarray:
    """The baked texture as float32 [size, size, 4] sRGB-encoded values (row 0 at v = 0, alpha 1)."""
    uv, colour = _corner_arrays(mesh)
    image, filled = rasterize(uv, colour[..., :3], size)
    fill_empty(image, filled)
    srgb = linear_to_srgb(np.clip(image, 0.0, 1.0)).astype(np.float32)
    return np.concatenate([srgb, np.ones((size, size, 1), np.float32)], -1)


def _material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """A Principled BSDF whose Base Color is the image (read through the mesh's UV map)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; 5.0 materials always have nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    texture = nodes.new("ShaderNodeTexImage")
    texture.image, texture.location = image, (-400.0, 0.0)
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Roughness"].default_value = 1.0
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (300.0, 0.0)
    links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return material


def bake_texture(context, mesh: bpy.types.Mesh, size: int, name: str) -> Baked:
    """Unwrap ``mesh``, bake its ``rgb`` attribute into a packed ``size``² image and give it a material using it.

    Raises:
        BakeError: the size is not offered, the mesh has no colours, or Blender is not in Object Mode. On any
        error, the image, material and UV map made here are removed.
    """
    check_budget(1, size)
    if COLOR_ATTRIBUTE not in mesh.color_attributes:
        raise BakeError(f"the mesh has no '{COLOR_ATTRIBUTE}' colours to bake")
    image = material = None
    had_uv = len(mesh.uv_layers) > 0
    try:
        unwrap(context, mesh, size)
        pixels = texture_pixels(mesh, size)
        image = bpy.data.images.new(f"{name} texture", size, size, alpha=False)
        image.pixels.foreach_set(pixels.ravel())
        image.pack()
        material = _material(f"{name} baked", image)
        mesh.materials.clear()
        mesh.materials.append(material)
        return Baked(image, material)
    except BaseException:
        if material is not None:
            bpy.data.materials.remove(material)
        if image is not None:
            bpy.data.images.remove(image)
        if not had_uv and mesh.uv_layers:
            mesh.uv_layers.remove(mesh.uv_layers[0])
        raise
