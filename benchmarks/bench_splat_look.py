"""How close a Cycles render of the add-on's splat layer comes to the engine's render of the same camera.

    .venv/bin/python benchmarks/bench_splat_look.py [--scene random|room --samples 16 --width 160 --height 120]

``--scene random`` (tests/blender/splat_look.py): 120 seeded Gaussians of random shapes, opacities and colours in
front of a camera, over black. ``--scene room``: the seeded synthetic room of :mod:`panst3r_engine.eval.synthetic`
(6 views at 96x72), made a ground-truth bundle and fitted for 150 steps with at most 5000 Gaussians (about a
minute on a CPU), seen from its first camera.

For the look of the first release (solid ellipsoids) and the current one (Gaussian falloff), prints the PSNR of
the Cycles render against the engine's render (``render_view``, what *Render This View with the Engine* shows)
and against the engine blending in linear light as Blender does (the shapes alone), and the Cycles render time.
Cycles: CPU, no denoiser, view transform Standard, 32 transparent bounces, the engine's background colour.
``--engine eevee``: EEVEE instead (``--samples`` anti-aliasing samples, alpha blended), which headless needs an
OpenGL driver (Mesa's software EGL works, slowly: shaders compile on the CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.blender import splat_look  # noqa: E402


def room_bundle(folder: Path) -> Path:
    """The fitted seed-0 room: a ground-truth bundle of 6 views with a splats.ply."""
    import torch

    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.eval.ground_truth import bundle_from_scene
    from panst3r_engine.eval.synthetic import generate_scene
    from panst3r_engine.splats import fit_bundle
    from panst3r_engine.splats.export import write_splats_ply

    torch.set_num_threads(1)
    generate_scene(folder / "scene", seed=0, num_views=6, width=96, height=72, samples=4)
    bundle = bundle_from_scene(read_scene(folder / "scene"), None, folder / "bundle", stride=2)
    result = fit_bundle(bundle, steps=150, max_gaussians=5000, seed=0)
    write_splats_ply(result.model, bundle / "splats.ply")
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", choices=("random", "room"), default="random")
    parser.add_argument("--samples", type=int, default=splat_look.SAMPLES)
    parser.add_argument("--width", type=int, default=splat_look.WIDTH)
    parser.add_argument("--height", type=int, default=splat_look.HEIGHT)
    parser.add_argument("--engine", choices=("cycles", "eevee"), default="cycles")
    args = parser.parse_args()

    import bpy  # noqa: I001 (before addon_utils, which bpy puts on the path)
    import addon_utils

    from panst3r_engine.splats.export import read_splats_ply

    folder = Path(tempfile.mkdtemp(prefix="splat-look-"))
    if args.scene == "random":
        bundle, stem = splat_look.write_look_bundle(folder), "IMG_0001"
    else:
        bundle, stem = room_bundle(folder), None
    addon_utils.enable("blender_addon", default_set=True)
    background = tuple(float(v) for v in read_splats_ply(bundle / "splats.ply").background)
    print(f"{args.scene}: {args.width}x{args.height}, {args.samples} samples, background {background}")
    name = "Cycles" if args.engine == "cycles" else "EEVEE"
    print(f"look | PSNR vs engine dB | PSNR vs engine in linear light dB | {name} s")
    for look in ("new", "old"):
        bpy.ops.wm.read_homefile(use_empty=True)
        if stem is None:
            import json

            stem = json.loads((bundle / "manifest.json").read_text())["images"][0]["stem"]
        request = splat_look.import_view(bpy, bundle, stem, (args.width, args.height))
        reference = splat_look.render_engine(bundle, request)
        linear = splat_look.render_engine(bundle, request, linear_light=True)
        if look == "old":
            splat_look.old_look(bpy)
        start = time.perf_counter()
        engine = "EEVEE" if args.engine == "eevee" else "CYCLES"
        image = splat_look.render_cycles(bpy, folder / f"{look}.png", args.samples, background, engine)
        seconds = time.perf_counter() - start
        scores = f"{splat_look.psnr(image, reference):.2f} | {splat_look.psnr(image, linear):.2f}"
        print(f"{look} | {scores} | {seconds:.1f}")
    print(f"images in {folder}")


if __name__ == "__main__":
    main()
