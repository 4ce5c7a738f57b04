"""Bake Texture: the add-on's numpy rasterisation against a Cycles Emission bake, on the same meshes and UVs.

    .venv/bin/python benchmarks/bench_bake.py [--points 20000 --detail 1 --size 1024 --rounds 2 --samples 1]

Make Mesh on every labelled instance of the synthetic room of tests/blender/room.py, each unwrapped once
(Smart UV Project, as the add-on does); then, interleaved per mesh and round (numpy, Cycles, numpy, Cycles, ...
so machine load hits both alike), the ``rgb`` colour attribute is transferred into a ``--size``² image by

* numpy: ``importers.bake.texture_pixels`` (barycentric rasterisation, seam fill, sRGB encode) + the image;
* Cycles: an Emission shader reading the attribute baked with ``bpy.ops.object.bake(type="EMIT")`` on the CPU,
  ``--samples`` samples, 16 px extend margin, into an 8-bit sRGB image.

Prints per mesh the seconds of each (median over rounds) and the colour error: the texture sampled bilinearly
at every face corner's UV against that vertex's colour, sRGB-encoded, in 0-1 (mean and 95th percentile).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def numpy_bake(bpy, bake, mesh, size: int) -> np.ndarray:
    pixels = bake.texture_pixels(mesh, size)
    image = bpy.data.images.new("numpy bake", size, size, alpha=False)
    image.pixels.foreach_set(pixels.ravel())
    bpy.data.images.remove(image)
    return pixels


def cycles_bake(bpy, ob, size: int, samples: int) -> np.ndarray:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    image = bpy.data.images.new("cycles bake", size, size, alpha=False)
    material = bpy.data.materials.new("cycles bake")
    if material.node_tree is None:
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_name = "rgb"
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(attribute.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs[0], output.inputs["Surface"])
    target = nodes.new("ShaderNodeTexImage")
    target.image = image
    nodes.active = target
    ob.data.materials.clear()
    ob.data.materials.append(material)
    for other in bpy.context.view_layer.objects:
        other.select_set(other == ob)
    bpy.context.view_layer.objects.active = ob
    bake = scene.render.bake
    bake.margin, bake.margin_type, bake.use_clear = 16, "EXTEND", True
    assert bpy.ops.object.bake(type="EMIT") == {"FINISHED"}
    pixels = np.empty(size * size * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.materials.remove(material)
    bpy.data.images.remove(image)
    return pixels.reshape(size, size, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--detail", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()

    import bpy  # noqa: I001 (before addon_utils, which bpy puts on the path)
    import addon_utils

    from tests.blender.room import write_room_bundle

    addon_utils.enable("blender_addon", default_set=True)
    from blender_addon.importers import bake, meshes

    bundle = write_room_bundle(Path(tempfile.mkdtemp(prefix="bench-bake-")) / "room", args.points)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    sources = [ob for ob in bpy.context.scene.objects if ob.get("segment", 0) != 0 and ob.modifiers]
    print(f"room of {args.points} points, detail {args.detail:g}, {args.size} px, Cycles {args.samples} sample(s)")
    print("mesh | faces | unwrap s | numpy s | Cycles s | numpy error mean / p95 | Cycles error mean / p95")
    for source in sources:
        ob = meshes.make_mesh(bpy.context, source, args.detail)
        start = time.perf_counter()
        bake.unwrap(bpy.context, ob.data, args.size)
        unwrap = time.perf_counter() - start
        times: dict[str, list[float]] = {"numpy": [], "cycles": []}
        results = {}
        for _ in range(args.rounds):
            for name in times:
                start = time.perf_counter()
                if name == "numpy":
                    results[name] = numpy_bake(bpy, bake, ob.data, args.size)
                else:
                    results[name] = cycles_bake(bpy, ob, args.size, args.samples)
                times[name].append(time.perf_counter() - start)
        from tests.blender.test_bake import corner_errors  # the test's own measure

        errors = {name: corner_errors(bake, ob.data, pixels) for name, pixels in results.items()}
        row = [ob.name, str(len(ob.data.polygons)), f"{unwrap:.2f}"]
        row += [f"{statistics.median(times[n]):.2f}" for n in times]
        row += [f"{errors[n].mean():.4f} / {np.percentile(errors[n], 95):.4f}" for n in times]
        print(" | ".join(row))


if __name__ == "__main__":
    main()
