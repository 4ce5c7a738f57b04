"""Make Mesh against the true meshes of a rendered synthetic room: Chamfer distance and time per detail level.

    .venv/bin/python benchmarks/bench_meshes.py [--views 8] [--width 128] [--height 96] [--details 0.5 1 2]

Renders a seeded room with ``panst3r_engine.eval.synthetic`` (fast mode), writes its ground-truth bundle
(every pixel a point, ``bundle_from_scene``), imports it in Blender-as-a-module and runs Make Mesh on every
labelled instance at each detail. Prints, per detail, the mean over instances of the symmetric Chamfer distance
to the part of the true meshes that some photo saw (area-weighted samples), for the mesh, for the instance's
bounding box (a trivial baseline) and for the input points, the mesh -> truth half alone (accuracy), and the
total Make Mesh time and faces.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--details", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()

    import bpy
    import numpy as np

    addon_utils = importlib.import_module("addon_utils")  # on the path once bpy is imported

    from blender_addon.importers import meshes
    from panst3r_engine.eval.ground_truth import bundle_from_scene
    from tests.blender.mesh_metrics import render_scene, score_meshes

    addon_utils.enable("blender_addon", default_set=True)
    with tempfile.TemporaryDirectory(prefix="panst3r-bench-meshes-") as tmp:
        folder = Path(tmp) / "room"
        render_scene(folder, args.views, args.width, args.height, args.seed)
        bundle = bundle_from_scene(folder, None, Path(tmp) / "bundle", stride=1)
        print(f"seed {args.seed}, {args.views} views of {args.width}x{args.height}")
        columns = ["Detail", "Chamfer: mesh (mm)", "mesh -> truth (mm)", "bounding box (mm)", "input points (mm)"]
        print("| " + " | ".join([*columns, "time (s)", "faces"]) + " |")
        print("|---|---|---|---|---|---|---|")
        for detail in args.details:
            bpy.ops.wm.read_homefile(use_empty=True)
            rows = score_meshes(bpy, meshes, folder, bundle, detail)
            mean = {k: float(np.mean([r[k] for r in rows])) * 1000 for k in ("mesh", "accuracy", "box", "points")}
            seconds, faces = sum(r["seconds"] for r in rows), sum(r["faces"] for r in rows)
            values = [f"{mean[k]:.1f}" for k in ("mesh", "accuracy", "box", "points")]
            print("| " + " | ".join([f"{detail:g}", *values, f"{seconds:.1f}", f"{faces:,}"]) + " |")
        points = sum(r["points_count"] for r in rows)
        print(f"{len(rows)} instances, {points:,} points")


if __name__ == "__main__":
    main()
