"""Surface metrics for the mesh tests and benchmarks/bench_meshes.py: area-weighted sampling and Chamfer distance."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree


def triangles(ob) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices float64 [V, 3] and triangles int [T, 3] of a mesh object."""
    mesh = ob.data
    local = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", local)
    matrix = np.array(ob.matrix_world)
    world = local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", tris)
    return world, tris.reshape(-1, 3)


def sample_surface(vertices: np.ndarray, tris: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points [count, 3] spread uniformly over the triangles' area (uniform barycentric sampling)."""
    a, b, c = (vertices[tris[:, i]] for i in range(3))
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    pick = rng.choice(len(tris), count, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(count))[:, None], rng.random(count)[:, None]
    return a[pick] * (1 - r1) + b[pick] * (r1 * (1 - r2)) + c[pick] * (r1 * r2)


def box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [8, 3] and triangles [12, 3] of an axis-aligned box (the trivial baseline)."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
    vertices = lo + corners * (hi - lo)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return vertices, np.array([t for q in quads for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])


def chamfer(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Symmetric mean Chamfer distance between point samples a [N, 3] and b [M, 3], and the mean a -> b part."""
    a_to_b = cKDTree(b).query(a)[0].mean()
    return float((a_to_b + cKDTree(a).query(b)[0].mean()) / 2), float(a_to_b)


def scene_truth(bpy, scene_folder) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Ground-truth meshes of a synthetic scene folder in its own frame, per instance id: (vertices, triangles).

    The layout is sampled again from the scene's seed and size (it is deterministic) and built with the
    renderer's own mesh builder.
    """
    from mathutils import Matrix

    from panst3r_engine.eval.blender_render import _mesh_from_parts
    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.eval.scene_layout import sample_layout

    scene = read_scene(scene_folder)
    first = scene.views[0]
    layout = sample_layout(scene.seed, len(scene.views), first.width, first.height, scene.meta["path"])
    truth = {}
    for obj in layout.objects:
        mesh = _mesh_from_parts(obj.name, obj.parts)
        placed = np.array(Matrix.Translation(obj.location) @ Matrix.Rotation(obj.yaw, 4, "Z"))
        ob = bpy.data.objects.new(obj.name, mesh)
        ob.matrix_world = Matrix(placed.tolist())
        truth[obj.instance_id] = triangles(ob)
        bpy.data.objects.remove(ob)
        bpy.data.meshes.remove(mesh)
    return truth


def visible(points_world: np.ndarray, scene_folder, tolerance: float = 0.03) -> np.ndarray:
    """bool [N]: which ground-truth points [N, 3] (scene frame) some view sees (its depth agrees within tolerance).

    The meshes can only follow what the photos saw; unseen faces (backs against walls, undersides) are left
    out of the completeness half of the Chamfer distance.
    """
    from panst3r_engine.eval.dataset import project, read_scene

    seen = np.zeros(len(points_world), bool)
    for view in read_scene(scene_folder).views:
        uv, z = project(points_world, view.K, view.cam_to_world)
        col, row = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        inside = (z > 0) & (col >= 0) & (col < view.width) & (row >= 0) & (row < view.height)
        depth = np.full(len(points_world), np.nan)
        depth[inside] = view.depth[row[inside], col[inside]]
        seen |= inside & (np.abs(depth - z) < tolerance + 0.01 * z)
    return seen


def to_blender(points: np.ndarray, world_matrix: np.ndarray) -> np.ndarray:
    """Scene-frame points [N, 3] -> Blender, with an import's stored ``world_matrix`` [4, 4] (row-major)."""
    return points @ world_matrix[:3, :3].T + world_matrix[:3, 3]


def render_scene(folder: Path, views: int, width: int, height: int, seed: int = 3) -> None:
    """A synthetic room rendered by the project's generator (in its own process: it resets Blender)."""
    command = [sys.executable, "-m", "panst3r_engine.eval.synthetic", str(folder), "--seed", str(seed), "--fast"]
    command += ["--views", str(views), "--width", str(width), "--height", str(height)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)


def score_meshes(bpy, meshes, folder: Path, bundle: Path, detail: float, samples: int = 20_000) -> list[dict]:
    """Import a ground-truth bundle of a synthetic scene folder, make every labelled instance's mesh, score it.

    ``meshes`` is the add-on's ``importers.meshes`` module. Returns one row per instance: seconds and faces of
    Make Mesh, and the Chamfer distance (m) of the mesh, of its points' bounding box (the trivial baseline) and of
    the points themselves, each against the part of the true surface that some photo saw.
    """
    rng = np.random.default_rng(0)
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), cameras=False) == {"FINISHED"}
    instances = [ob for ob in bpy.context.scene.objects if ob.get("segment", 0) != 0 and ob.modifiers]
    root = next(c for c in bpy.data.collections if c.get("panst3r_result"))
    world = np.array(root["world_matrix"]).reshape(4, 4)
    truth = scene_truth(bpy, folder)
    rows = []
    for ob in instances:
        true_samples = sample_surface(*truth[ob["segment"]], samples, rng)
        seen = to_blender(true_samples[visible(true_samples, folder)], world)
        started = time.perf_counter()
        mesh = meshes.make_mesh(bpy.context, ob, detail)
        seconds = time.perf_counter() - started
        points = to_blender(np.array([v.co for v in ob.data.vertices]), np.array(ob.matrix_world))
        distance, accuracy = chamfer(sample_surface(*triangles(mesh), samples, rng), seen)
        rows.append(
            {
                "name": ob.name,
                "segment": ob["segment"],
                "points_count": len(points),
                "seconds": seconds,
                "faces": len(mesh.data.polygons),
                "mesh": distance,
                "accuracy": accuracy,  # mesh -> truth only
                "box": chamfer(sample_surface(*box_mesh(points.min(0), points.max(0)), samples, rng), seen)[0],
                "points": chamfer(points, seen)[0],
            }
        )
    return rows
