"""Surface metrics for the mesh tests and benchmarks/bench_meshes.py: area-weighted sampling and Chamfer distance."""

from __future__ import annotations

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
