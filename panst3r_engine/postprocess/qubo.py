"""QUBO panoptic inference (PanSt3R, arXiv 2506.21348): the official objective, a deterministic solver.

Objective over x ∈ {0,1}^Q (all queries, class-agnostic), N = H_max·W_max·V:
    E(x) = xᵀAx + 1e-3·mean(x),  A_ii = -a_i / N,  A_ij = o_ij / N.
Decode (step 5): every pixel, padding included, goes to the selected mask of highest probability
(ties -> first); an instance is kept if class_prob · mean_conf >= 0.01; ids follow the ascending
position within the selected set, which is also the returned ``query_id`` (``query`` is the
original query index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .common import Checkpoints, PanopticResult, checkpoints_or_none, empty_result, padded_size, upsample
from .qubo_solver import LAMBDA_REG, SolverConfig, qubo_energy, solve_qubo
from .qubo_weights import OverlapStats, soft_overlaps

PROB_THRESHOLD = 0.01


FAST_TAU = 1e-3  # fast-weights activity threshold used by the automatic choice
AUTO_EXACT_PAIR_PIXELS = 2.5e9  # exact weights when Q² · Σ_v H_v W_v is at most this (a few s)


@dataclass(frozen=True)
class QuboConfig:
    """tau: 0 = exact weights; > 0 = fast weights with a bounded error (see qubo_weights);
    None = exact when Q² · pixels <= AUTO_EXACT_PAIR_PIXELS, else FAST_TAU."""

    tau: float | None = None
    lam: float = LAMBDA_REG
    solver: SolverConfig = SolverConfig()


def resolve_tau(tau: float | None, queries: int, shapes: Sequence[tuple[int, int]]) -> float:
    """The weights threshold actually used (see QuboConfig)."""
    if tau is not None:
        return float(tau)
    pixels = sum(h * w for h, w in shapes)
    return 0.0 if queries**2 * pixels <= AUTO_EXACT_PAIR_PIXELS else FAST_TAU


def qubo_matrix(stats: OverlapStats, norm: float) -> np.ndarray:
    """A [Q, Q] float64: -a_i/N on the diagonal, o_ij/N off it."""
    a = stats.overlap / norm
    np.fill_diagonal(a, -stats.area / norm)
    return a


def qubo_norm(shapes: Sequence[tuple[int, int]]) -> float:
    """N = H_max · W_max · V (the padded size)."""
    hm, wm = padded_size(shapes)
    return float(hm * wm * len(shapes))


def qubo_inference(
    cls_probs: torch.Tensor,
    probs: Sequence[torch.Tensor],
    shapes: Sequence[tuple[int, int]],
    seed: int = 0,
    cfg: QuboConfig = QuboConfig(),
    ck: Checkpoints | None = None,
) -> PanopticResult:
    """cls_probs [Q, C], probs per view at stride 2 [Q, h_v, w_v] (sigmoid, not resized) -> result.

    All void (conf 0) if nothing is selected. ``ck``: progress/cancellation checkpoints inside the
    weights, the solver and the decoding (1.0 at the end).
    """
    ck = checkpoints_or_none(ck)
    tau = resolve_tau(cfg.tau, len(cls_probs), shapes)
    stats = soft_overlaps(probs, shapes, tau=tau, ck=ck.part(0.0, 0.7))
    a = qubo_matrix(stats, qubo_norm(shapes))
    x = solve_qubo(a, seed=seed, lam=cfg.lam, cfg=cfg.solver, ck=ck.part(0.7, 0.9))
    result = decode_selection(cls_probs, probs, shapes, np.flatnonzero(x), ck=ck.part(0.9, 1.0))
    xf = x.astype(np.float64)
    result.info.update(
        selected=np.flatnonzero(x).tolist(),
        energy=qubo_energy(a, x, cfg.lam),
        tau=tau,
        energy_error_bound=float(xf @ stats.bound @ xf) / qubo_norm(shapes),
    )
    ck.tick(1.0, f"{len(result.segments)} segments", force=True)
    return result


def decode_selection(
    cls_probs: torch.Tensor,
    probs: Sequence[torch.Tensor],
    shapes: Sequence[tuple[int, int]],
    selected: np.ndarray,
    ck: Checkpoints | None = None,
) -> PanopticResult:
    """Step 5: pan/conf/segments from the ascending selected query indices [S].

    probs: per view stride-2 probabilities [Q, h_v, w_v]; only the selected ones are resized
    (per-channel resizing, so the values equal the official full resize).
    """
    if len(selected) == 0:
        return empty_result(shapes, 0.0)
    sel = torch.as_tensor(selected, dtype=torch.int64)
    cls_prob, cls_id = cls_probs[sel].max(dim=-1)
    n = len(sel)
    conf_sum, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.int64)
    insts, confs = [], []
    ck = checkpoints_or_none(ck)
    for v, (p, shape) in enumerate(zip(probs, shapes)):
        ck.tick(v / len(shapes), f"decode: view {v + 1}/{len(shapes)}")
        conf, inst = upsample(p[sel], shape).max(dim=0)
        conf_sum += torch.bincount(inst.flatten(), weights=conf.flatten().double(), minlength=n)
        count += torch.bincount(inst.flatten(), minlength=n)
        insts.append(inst)
        confs.append(conf)
    hm, wm = padded_size(shapes)
    count[0] += hm * wm * len(shapes) - sum(h * w for h, w in shapes)  # padding: prob 0, first wins
    lut, segments = _keep_instances(cls_prob, cls_id, conf_sum, count, selected)
    pan = [lut[i].numpy().astype(np.int32) for i in insts]
    return PanopticResult(pan=pan, conf=[c.numpy().astype(np.float32) for c in confs], segments=segments)


def _keep_instances(
    cls_prob: torch.Tensor, cls_id: torch.Tensor, conf_sum: torch.Tensor, count: torch.Tensor, selected: np.ndarray
) -> tuple[torch.Tensor, list[dict]]:
    """Instances in ascending order with class_prob · mean_conf >= 0.01 -> (position->id [S], segments)."""
    lut = torch.zeros(len(selected), dtype=torch.int32)
    segments: list[dict] = []
    for k in torch.nonzero(count > 0).flatten().tolist():
        mean_conf = float((conf_sum[k] / count[k]).to(torch.float32))
        if float(cls_prob[k]) * mean_conf < PROB_THRESHOLD:
            continue
        lut[k] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "query_id": k,
                "query": int(selected[k]),
                "category_id": int(cls_id[k]),
                "score": float(cls_prob[k]),
                "class_prob": float(cls_prob[k]),
                "mask_conf": mean_conf,
                "area": int(count[k]),
            }
        )
    return lut, segments
