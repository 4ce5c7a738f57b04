"""QUBO post-processing benchmark on realistic synthetic predictions (CPU).

    python benchmarks/bench_qubo.py [--queries 200 --views 10 --width 512 --height 384 --threads 2]
    python benchmarks/bench_qubo.py --dense          # masks like an untrained head's (3 views by default)
    python benchmarks/bench_qubo.py --raw DIR/raw.npz  # a saved network output (``run --save-raw``)

Synthetic inputs (seeded): stride-2 mask logits shaped like a trained mask head's output:
object queries whose masks are the blob-shaped Voronoi cells of a random partition of each view
they are visible in (logit +10 inside, -14 far away, smooth noise), near-duplicate queries
(shifted, weaker copies), a few weak junk blobs and "no-object" queries (about -9 everywhere);
random class logits, high for object queries.

``--dense``: every mask dense and low-confidence, with the statistics of the full-size v2 network's
output under the parity fill weights (see :func:`make_dense_inputs`): every query is above the fast
weights' threshold on every tile, so the exact pair terms cover all Q(Q-1)/2 pairs on every pixel.

Prints per-stage times (preamble = sigmoid + resize, weights exact and fast, solve, decode), the work
of the weights (pixel minima) and, with ``--kernels``, the weights with the former pair kernel
(``torch.cdist``, both halves) and the current one (``pdist``, upper triangle) interleaved; on the
default synthetic case, the objective of our solver against the official-style annealer.
"""

from __future__ import annotations

import argparse
import os
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


def make_dense_inputs(
    seed: int = 0, queries: int = 200, views: int = 3, height: int = 384, width: int = 512, classes: int = 1
):
    """Predictions like an untrained (random-weight) head's; same return as :func:`make_inputs`.

    Statistics measured on the full-size v2 network with the parity fill weights (3 views, 512x384):
    all queries share one noisy pattern (logit std 1.35, mean |difference| of neighbours 1.0), offset
    per query (means -1.4 to -0.8), plus a smooth residual (std 0.18): queries correlate at 0.97-0.995
    and every sigmoid is above 1e-3 almost everywhere; class logits are about 0.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = height // 2, width // 2
    offset = torch.rand(queries, 1, 1, generator=gen) * 0.6 - 1.4
    masks = []
    for _ in range(views):
        smooth = smooth_noise(gen, 1, h, w)
        common = 0.91 * torch.randn(1, h, w, generator=gen) + smooth / smooth.std()
        residual = smooth_noise(gen, queries, h, w, cells=12)
        masks.append(common + offset + 0.18 * residual / residual.std())
    logits = 0.005 * torch.randn(queries, classes, generator=gen)
    return logits, masks, np.array([[height, width]] * views, np.int32)


def load_raw_inputs(path: str):
    """``raw.npz`` -> (pred_logits, per-view mask logits cropped to each view, true_shape), as ``postprocess``."""
    from panst3r_engine.bundle.raw import load_raw

    raw = load_raw(path)
    shapes = np.asarray(raw["true_shape"]).astype(int)
    masks = [torch.from_numpy(raw["pred_masks"][v, :, : h // 2, : w // 2].copy()) for v, (h, w) in enumerate(shapes)]
    return torch.from_numpy(raw["pred_logits"]), masks, shapes


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
    ap.add_argument("--views", type=int, default=None, help="default 10 (3 with --dense)")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--dense", action="store_true", help="dense low-confidence masks (an untrained head's)")
    ap.add_argument("--raw", help="a raw.npz written by `run --save-raw` instead of synthetic predictions")
    ap.add_argument("--tau", type=float, default=1e-3, help="fast-weights threshold")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    ap.add_argument("--kernels", action="store_true", help="weights with the former and current pair kernels")
    ap.add_argument("--exact-full", action="store_true", help="also exact weights at full size (about a minute)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.raw:
        logits, masks, shapes = load_raw_inputs(args.raw)
        case = f"{args.raw}: {len(logits)} queries x {len(shapes)} views"
    else:
        views = args.views or (3 if args.dense else 10)
        make = make_dense_inputs if args.dense else make_inputs
        logits, masks, shapes = make(0, args.queries, views, args.height, args.width)
        case = f"{'dense' if args.dense else 'synthetic'}: {args.queries} queries x {views} views"
    runs = [run_stages(logits, masks, shapes, tau=args.tau) for _ in range(args.repeat)]
    print(
        f"QUBO post-processing, {case} at {shapes[0][1]}x{shapes[0][0]}, {args.threads} thread(s), "
        f"median of {args.repeat}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'stage':<34}{'median s':>10}{'min s':>10}")
    for stage in STAGES + ("total",):
        ts = [sum(r["times"].values()) if stage == "total" else r["times"][stage] for r in runs]
        label = f"weights (fast, tau={args.tau:g})" if stage == "weights" else stage
        print(f"{label:<34}{np.median(ts):>10.3f}{min(ts):>10.3f}")
    fast = runs[0]
    n = qubo_norm(fast["shp"])
    q, pixels = len(logits), sum(h * w for h, w in fast["shp"])
    print(
        f"selected {int(fast['x'].sum())} queries, {len(fast['res'].segments)} segments; weight error bound: "
        f"max {fast['stats'].bound.max() / n:.2e} per pair (normalised), {energy_bound(fast):.2e} on E(x)"
    )
    print(
        f"exact pair terms: {fast['stats'].pair_pixels:.3g} pixel minima "
        f"({fast['stats'].pair_pixels / (q * (q - 1) // 2 * pixels):.1%} of all pairs on all pixels)"
    )
    if args.kernels:
        compare_kernels(fast, args.tau, args.repeat)
    if args.exact_full:
        compare_exact(fast)
    if not (args.raw or args.dense):
        small_cases()


def compare_kernels(fast: dict, tau: float, repeat: int) -> None:
    """Weights with the former pair kernel (torch.cdist) and the current one (pdist), interleaved."""
    times: dict[str, list[float]] = {"cdist": [], "pdist": []}
    stats = {}
    for _ in range(repeat):
        for kernel in times:
            stats[kernel], t = timed(soft_overlaps, fast["probs"], fast["shp"], tau=tau, kernel=kernel)
            times[kernel].append(t)
    same = np.abs(stats["cdist"].overlap - stats["pdist"].overlap).max() / qubo_norm(fast["shp"])
    print(f"{'weights, pair kernel':<34}{'median s':>10}{'min s':>10}")
    for kernel, label in (("cdist", "torch.cdist (before)"), ("pdist", "pdist upper triangle (now)")):
        print(f"{label:<34}{np.median(times[kernel]):>10.3f}{min(times[kernel]):>10.3f}")
    print(f"ratio before/after {np.median(times['cdist']) / np.median(times['pdist']):.2f}x; max |diff| {same:.1e}")


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
