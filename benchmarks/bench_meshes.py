"""Make Mesh against the true meshes of a rendered synthetic room: Chamfer distance and time per detail level.

    .venv/bin/python benchmarks/bench_meshes.py [--views 8] [--width 128] [--height 96] [--details 0.5 1 2]

Renders a seeded room with ``panst3r_engine.eval.synthetic`` (fast mode), writes its ground-truth bundle
(every pixel a point, ``bundle_from_scene``), imports it in Blender-as-a-module and runs Make Mesh on every
labelled instance at each detail. Prints, per detail, the mean over instances of the symmetric Chamfer distance
to the part of the true meshes that some photo saw (area-weighted samples), for the mesh, for the instance's
bounding box (a trivial baseline) and for the input points, the mesh -> truth half alone (accuracy), and the
total Make Mesh time and faces.

``--poisson`` also scores an engine-side alternative per instance, screened Poisson reconstruction (Kazhdan &
Hoppe 2013) through PyMeshLab (``pip install pymeshlab``; not a project dependency), in the scene's own frame:
normals from 10 neighbours turned towards each point's camera, octree depth 8, the 10 % least dense vertices
trimmed. ``--segments`` limits both to some instance ids (Poisson takes minutes per large instance).
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
    parser.add_argument("--poisson", action="store_true", help="also screened Poisson via PyMeshLab")
    parser.add_argument("--segments", type=int, nargs="*", help="only these instance ids (default: all)")
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
            rows = [r for r in rows if not args.segments or r["segment"] in args.segments]
            mean = {k: float(np.mean([r[k] for r in rows])) * 1000 for k in ("mesh", "accuracy", "box", "points")}
            seconds, faces = sum(r["seconds"] for r in rows), sum(r["faces"] for r in rows)
            values = [f"{mean[k]:.1f}" for k in ("mesh", "accuracy", "box", "points")]
            print("| " + " | ".join([f"{detail:g}", *values, f"{seconds:.1f}", f"{faces:,}"]) + " |")
        points = sum(r["points_count"] for r in rows)
        print(f"{len(rows)} instances, {points:,} points")
        if args.poisson:
            rows = poisson_scores(bpy, folder, bundle, args.segments)
            distance, accuracy = (float(np.mean([r[k] for r in rows])) * 1000 for k in ("mesh", "accuracy"))
            seconds, faces = sum(r["seconds"] for r in rows), sum(r["faces"] for r in rows)
            print(f"| Poisson | {distance:.1f} | {accuracy:.1f} | | | {seconds:.1f} | {faces:,} |")


def poisson_scores(bpy, folder: Path, bundle: Path, segments: list[int] | None, samples: int = 20_000) -> list[dict]:
    """Screened Poisson (PyMeshLab) per labelled instance of a ground-truth bundle, scored like score_meshes."""
    import time

    import numpy as np
    import pymeshlab

    from panst3r_engine.eval.dataset import read_scene
    from tests.blender.mesh_metrics import chamfer, sample_surface, scene_truth, visible

    rng = np.random.default_rng(0)
    arrays = np.load(bundle / "points.npz")
    xyz, segment, view = arrays["xyz"].astype(np.float64), arrays["segment"], arrays["view"]
    centres = np.stack([v.cam_to_world[:3, 3] for v in read_scene(folder).views])
    truth = scene_truth(bpy, folder)
    rows = []
    for seg in segments or sorted(set(segment.tolist()) - {0}):
        chosen = segment == seg
        points = xyz[chosen]
        started = time.perf_counter()
        meshset = pymeshlab.MeshSet()
        meshset.add_mesh(pymeshlab.Mesh(vertex_matrix=points))
        meshset.compute_normal_for_point_clouds(k=10)
        normals = meshset.current_mesh().vertex_normal_matrix()
        normals *= np.sign((normals * (centres[view[chosen]] - points)).sum(1))[:, None]
        meshset.add_mesh(pymeshlab.Mesh(vertex_matrix=points, v_normals_matrix=normals))
        meshset.generate_surface_reconstruction_screened_poisson(depth=8, preclean=True)
        density = meshset.current_mesh().vertex_scalar_array()
        meshset.compute_selection_by_condition_per_vertex(condselect=f"q < {np.percentile(density, 10)}")
        meshset.meshing_remove_selected_vertices()
        mesh = meshset.current_mesh()
        seconds = time.perf_counter() - started
        true_samples = sample_surface(*truth[seg], samples, rng)
        seen = true_samples[visible(true_samples, folder)]
        distance, accuracy = chamfer(sample_surface(mesh.vertex_matrix(), mesh.face_matrix(), samples, rng), seen)
        rows.append({"mesh": distance, "accuracy": accuracy, "seconds": seconds, "faces": len(mesh.face_matrix())})
    return rows


if __name__ == "__main__":
    main()
