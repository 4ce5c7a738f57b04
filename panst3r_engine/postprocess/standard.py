"""'standard_v1' / 'standard_v2' panoptic inference (Mask2Former-style, arXiv 2112.01527, as PanSt3R applies it).

One algorithm with two threshold sets: keep queries whose best class probability passes
``cls_threshold``; per pixel the score-weighted mask argmax wins; a candidate survives if the
pixels it wins (with prob >= ``mask_threshold``) are at least ``overlap_threshold`` of its
confident area (prob >= 0.5); repeat ``niters`` times on the survivors.
Padding never changes the result (padded pixels are 0 in every mask), so views are processed
at their own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .common import Checkpoints, PanopticResult, checkpoints_or_none, empty_result

CONFIDENT_PROB = 0.5  # "original area" threshold, fixed in both versions


@dataclass(frozen=True)
class StandardConfig:
    """Thresholds of one standard variant."""

    cls_threshold: float
    mask_threshold: float
    overlap_threshold: float
    niters: int
    void_confidence: float = 0.1


STANDARD_V1 = StandardConfig(cls_threshold=0.1, mask_threshold=0.5, overlap_threshold=0.8, niters=1)
STANDARD_V2 = StandardConfig(cls_threshold=0.1, mask_threshold=0.25, overlap_threshold=0.5, niters=2)


@dataclass
class _Pass:
    """One pass over the views: per view, the argmax over the candidates and its probability ([H_v, W_v] each),
    and per candidate the pixels it wins above ``mask_threshold`` (``kept``) and its confident area (``orig``)."""

    winner: list[torch.Tensor | None]
    win_prob: list[torch.Tensor | None]
    kept: torch.Tensor
    orig: torch.Tensor


def _argmax_pass(
    probs: Sequence[torch.Tensor],
    scores: torch.Tensor,
    cand: torch.Tensor,
    cfg: StandardConfig,
    ck: Checkpoints,
    keep_maps: bool = True,
) -> _Pass:
    """Score-weighted argmax among ``cand`` per pixel (ties -> first candidate), with the overlap-test counts.

    Reads each view once (``probs`` may compute it on demand) and keeps only per-view [H, W] maps (none
    unless ``keep_maps``) and per-candidate counts, so the views' [Q, H, W] probabilities are never held
    together.
    """
    k = len(cand)
    ps = _Pass([], [], torch.zeros(k, dtype=torch.int64), torch.zeros(k, dtype=torch.int64))
    for v in range(len(probs)):
        ck.tick(v / len(probs), f"argmax: view {v + 1}/{len(probs)}")
        pc = probs[v][cand]  # [K, H, W]
        winner = torch.argmax(scores[cand][:, None, None] * pc, dim=0)
        win_prob = torch.gather(pc, 0, winner[None])[0]
        ps.kept += torch.bincount(winner[win_prob >= cfg.mask_threshold], minlength=k)
        ps.orig += (pc >= CONFIDENT_PROB).flatten(1).sum(1)
        if keep_maps:
            ps.winner.append(winner.to(torch.int32))  # K <= Q: int32 is plenty, half the bytes
            ps.win_prob.append(win_prob)
    return ps


def _select(ps: _Pass, cfg: StandardConfig) -> list[int]:
    """Positions (within ``cand``) of the candidates that pass the overlap test, in order."""
    sel = []
    for i in range(len(ps.kept)):
        n_kept, n_orig = int(ps.kept[i]), int(ps.orig[i])
        if n_kept > 0 and n_orig > 0 and n_kept / n_orig >= cfg.overlap_threshold:
            sel.append(i)
    return sel


def _paint(
    ps: _Pass, sel: list[int], k: int, cfg: StandardConfig, ck: Checkpoints
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """pan/conf maps of the selected candidates (ids 1.. in order) and their pixel areas.

    Each view's argmax maps are dropped from ``ps`` once painted, so the pass and the maps are not held twice.
    """
    ids = torch.zeros(k + 1, dtype=torch.int32)  # position -> id (0 = not selected)
    ids[torch.as_tensor(sel, dtype=torch.int64)] = torch.arange(1, len(sel) + 1, dtype=torch.int32)
    pans, confs, areas = [], [], torch.zeros(len(sel) + 1, dtype=torch.int64)
    for v in range(len(ps.winner)):
        ck.tick(v / len(ps.winner), f"paint: view {v + 1}/{len(ps.winner)}")
        winner, wp = ps.winner[v].long(), ps.win_prob[v]
        ps.winner[v] = ps.win_prob[v] = None
        claimed = wp >= cfg.mask_threshold
        pan = torch.where(claimed, ids[winner], torch.zeros((), dtype=torch.int32))
        conf = torch.where(pan > 0, wp, torch.full_like(wp, cfg.void_confidence))
        areas += torch.bincount(pan.flatten().long(), minlength=len(sel) + 1)
        pans.append(pan.numpy().astype(np.int32))
        confs.append(conf.numpy().astype(np.float32))
    return pans, confs, areas[1:].tolist()


def standard_inference(
    cls_probs: torch.Tensor,
    probs: Sequence[torch.Tensor],
    shapes: Sequence[tuple[int, int]],
    cfg: StandardConfig = STANDARD_V2,
    ck: Checkpoints | None = None,
) -> PanopticResult:
    """cls_probs [Q, C], probs per view [Q, H_v, W_v] (resized mask probabilities) -> result.

    ``probs`` is read once per view and pass (a lazy sequence computes each view when read).
    ``ck``: progress/cancellation checkpoints (per view of every pass; 1.0 at the end).
    """
    ck = checkpoints_or_none(ck)
    scores, labels = cls_probs.max(dim=-1)
    cand = torch.nonzero(scores > cfg.cls_threshold).flatten()
    result = empty_result(shapes, cfg.void_confidence)
    for it in range(cfg.niters):
        if len(cand) == 0:
            result = empty_result(shapes, cfg.void_confidence)
            break
        step = ck.part(it / cfg.niters, (it + 1) / cfg.niters)
        last = it == cfg.niters - 1  # earlier passes only narrow the candidates: their maps are never painted
        ps = _argmax_pass(probs, scores, cand, cfg, step.part(0.0, 0.8 if last else 1.0), keep_maps=last)
        sel = _select(ps, cfg)
        if last:
            pans, confs, areas = _paint(ps, sel, len(cand), cfg, step.part(0.8, 1.0))
            segments = [_segment(n + 1, int(cand[i]), labels, scores, areas[n]) for n, i in enumerate(sel)]
            result = PanopticResult(pan=pans, conf=confs, segments=segments)
        cand = cand[torch.as_tensor(sel, dtype=torch.int64)]
    ck.tick(1.0, f"{len(result.segments)} segments", force=True)
    return result


def _segment(seg_id: int, query: int, labels: torch.Tensor, scores: torch.Tensor, area: int) -> dict:
    """segments_info entry (query_id = original query index, as the official)."""
    return {
        "id": seg_id,
        "query_id": query,
        "query": query,
        "category_id": int(labels[query]),
        "score": float(scores[query]),
        "area": int(area),
    }
