"""QUBO post-processing benchmark on realistic synthetic predictions (CPU).

    python benchmarks/bench_qubo.py [--queries 200 --views 10 --width 512 --height 384 --threads 2]

Synthetic inputs (seeded): stride-2 mask logits shaped like a trained mask head's output:
object queries whose masks are the blob-shaped Voronoi cells of a random partition of each view
they are visible in (logit +10 inside, -14 far away, smooth noise), near-duplicate queries
(shifted, weaker copies), a few weak junk blobs and "no-object" queries (about -9 everywhere);
random class logits, high for object queries.

Prints per-stage times (preamble = sigmoid + resize, weights exact and fast, solve, decode) and
the objective of our solver against the official-style annealer on a smaller case.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.postprocess._reference import anneal_reference  # noqa: E402
from panst3r_engine.postprocess.common import class_probs, mask_probs_low_res  # noqa: E402
from panst3r_engine.postprocess.qubo import decode_selection, qubo_matrix, qubo_norm  # noqa: E402
from panst3r_engine.postprocess.qubo_solver import qubo_energy, solve_qubo  # noqa: E402
from panst3r_engine.postprocess.qubo_weights import soft_overlaps  # noqa: E402


def smooth_noise(gen: torch.Generator, n: int, h: int, w: int, cells: int = 6) -> torch.Tensor:
    """[n, h, w] smooth noise in about [-1, 1] (bilinear upsampling of a coarse grid)."""
    coarse = torch.rand(n, 1, cells, cells * w // h + 1, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[:, 0]


def cell_logits(gen: torch.Generator, seeds: torch.Tensor, h: int, w: int, sharp: float) -> torch.Tensor:
    """[n, h, w] logits of the Voronoi cells of seeds [n, 2] (blob-shaped regions tiling the view).

    logit = sharp · (distance to the nearest other seed - distance to own seed), clipped to
    [-14, 10], plus smooth noise: about +10 inside, 0 on the border, -14 far away.
    """
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    dist = torch.sqrt((ys - seeds[:, 0, None, None]) ** 2 + (xs - seeds[:, 1, None, None]) ** 2)
    two = torch.topk(dist, 2, dim=0, largest=False).values
    other = torch.where(dist <= two[0], two[1], two[0])
    return (sharp * (other - dist)).clamp(-14.0, 10.0) + smooth_noise(gen, len(seeds), h, w)


def make_inputs(
    seed: int = 0, queries: int = 200, views: int = 10, height: int = 384, width: int = 512, classes: int = 20
):
    """-> pred_logits [Q, C], pred_masks list of V [Q, h, w] (stride 2), true_shapes [V, 2]."""
    gen = torch.Generator().manual_seed(seed)
    h, w = height // 2, width // 2
    n_obj, n_dup, n_junk = queries // 5, queries // 7, queries // 20
    parent = torch.randint(0, n_obj, (n_dup,), generator=gen)
    masks = []
    for _ in range(views):
        visible = torch.rand(n_obj, generator=gen) < 0.5
        seeds = torch.rand(n_obj, 2, generator=gen) * torch.tensor([h, w])
        obj = torch.full((n_obj, h, w), -14.0)
        obj[visible] = cell_logits(gen, seeds[visible], h, w, 0.5)
        obj = obj + smooth_noise(gen, n_obj, h, w)
        dup = 0.7 * torch.roll(obj[parent], shifts=(2, -3), dims=(1, 2)) - 1.0 + smooth_noise(gen, n_dup, h, w)
        junk = cell_logits(gen, torch.rand(n_junk, 2, generator=gen) * torch.tensor([h, w]), h, w, 0.3) - 6.0
        null = -9.0 + 2 * smooth_noise(gen, queries - n_obj - n_dup - n_junk, h, w)
        masks.append(torch.cat([obj, dup, junk, null]))
    logits = torch.randn(queries, classes, generator=gen) - 4.0
    logits[torch.arange(n_obj), torch.randint(0, classes, (n_obj,), generator=gen)] += 7.0
    perm = torch.randperm(queries, generator=gen)
    return logits[perm], [m[perm] for m in masks], np.array([[height, width]] * views, np.int32)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


STAGES = ("sigmoid", "weights", "solve", "decode")


def run_stages(logits, masks, shapes, tau: float, seed: int = 0) -> dict:
    """One QUBO post-processing, stage by stage: times [s] and intermediate results."""
    shp = [tuple(map(int, s)) for s in shapes]
    (cls, probs), t_pre = timed(lambda: (class_probs(logits), mask_probs_low_res(masks, shp)))
    stats, t_w = timed(soft_overlaps, probs, shp, tau=tau)
    a = qubo_matrix(stats, qubo_norm(shp))
    x, t_s = timed(solve_qubo, a, seed=seed)
    res, t_d = timed(decode_selection, cls, probs, shp, np.flatnonzero(x))
    times = dict(zip(STAGES, (t_pre, t_w, t_s, t_d)))
    return dict(times=times, a=a, x=x, stats=stats, res=res, probs=probs, shp=shp)


def energy_bound(run: dict) -> float:
    """|E_true(x) - E_fast(x)| <= Σ_{i != j selected} bound_ij / N for the returned x."""
    x = run["x"].astype(np.float64)
    return float(x @ run["stats"].bound @ x) / qubo_norm(run["shp"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--tau", type=float, default=1e-3, help="fast-weights threshold")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    ap.add_argument("--exact-full", action="store_true", help="also exact weights at full size (about a minute)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logits, masks, shapes = make_inputs(0, args.queries, args.views, args.height, args.width)
    runs = [run_stages(logits, masks, shapes, tau=args.tau) for _ in range(args.repeat)]
    print(
        f"QUBO post-processing, {args.queries} queries x {args.views} views at {args.width}x{args.height}, "
        f"{args.threads} thread(s), median of {args.repeat}"
    )
    print(f"{'stage':<34}{'median s':>10}{'min s':>10}")
    for stage in STAGES + ("total",):
        ts = [sum(r["times"].values()) if stage == "total" else r["times"][stage] for r in runs]
        label = f"weights (fast, tau={args.tau:g})" if stage == "weights" else stage
        print(f"{label:<34}{np.median(ts):>10.3f}{min(ts):>10.3f}")
    fast = runs[0]
    n = qubo_norm(fast["shp"])
    print(
        f"selected {int(fast['x'].sum())} queries, {len(fast['res'].segments)} segments; weight error bound: "
        f"max {fast['stats'].bound.max() / n:.2e} per pair (normalised), {energy_bound(fast):.2e} on E(x)"
    )
    if args.exact_full:
        compare_exact(fast)
    small_cases()


def compare_exact(fast: dict) -> None:
    """Exact weights at full size: time, and the exact energy of the fast and exact-weight solutions."""
    stats, t_exact = timed(soft_overlaps, fast["probs"], fast["shp"], tau=0.0)
    a = qubo_matrix(stats, qubo_norm(fast["shp"]))
    x_exact = solve_qubo(a, seed=0)
    print(f"{'weights (exact)':<34}{t_exact:>10.3f}")
    print(
        f"exact objective: fast-weights solution {qubo_energy(a, fast['x']):.9f}, exact-weights solution "
        f"{qubo_energy(a, x_exact):.9f}, same selection: {bool((x_exact == fast['x']).all())}; max |o_fast - o_exact| "
        f"{np.abs(fast['stats'].overlap - stats.overlap).max() / qubo_norm(fast['shp']):.2e} (normalised)"
    )


def small_cases() -> None:
    """Ours (exact weights) vs the official-style annealer (seed 0) on smaller inputs."""
    print(f"\n{'case: Q x V, WxH':<22}{'E ours':>14}{'E annealer':>14}{'ours-ann.':>11}{'t ours':>8}{'t ann.':>8}")
    for q, v, hh, ww in [(200, 2, 96, 128), (200, 4, 64, 96), (100, 3, 96, 128), (60, 4, 64, 96)]:
        logits, masks, shapes = make_inputs(1, q, v, hh, ww)
        run = run_stages(logits, masks, shapes, tau=0.0)
        (xr, er), t_ref = timed(anneal_reference, run["a"], 0)
        eo = qubo_energy(run["a"], run["x"])
        t_ours = run["times"]["weights"] + run["times"]["solve"]
        print(f"{f'{q} x {v}, {ww}x{hh}':<22}{eo:>14.9f}{er:>14.9f}{eo - er:>11.2e}{t_ours:>8.2f}{t_ref:>8.2f}")


if __name__ == "__main__":
    main()
