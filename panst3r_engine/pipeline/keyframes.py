"""Which photos become keyframes (MUSt3R's memory), and in which order.

``linspace`` is the official default: evenly spaced indices, fine for an ordered walk-through but arbitrary
for an unordered folder. ``retrieval`` picks views that are far apart in appearance and orders them so each
keyframe overlaps the ones before it, as MUSt3R does (arXiv 2503.01661, keyframe selection by retrieval):
farthest-point sampling on 1 - S, then the view with the largest summed similarity first and, greedily, the
view most similar to any chosen one. MUSt3R's similarity S comes from its retrieval head (ASMK over the
encoder tokens); without those weights this module uses a training-free S: the cosine similarity of the
views' mean-pooled, L2-normalised encoder tokens. Unlike the official code the first FPS anchor is seeded,
so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panst3r_engine.pipeline.options import KEYFRAME_METHODS as METHODS


def linspace_keyframes(num_views: int, num_keyframes: int) -> list[int]:
    """Evenly spaced indices, first and last included (numpy ``linspace`` with int truncation, as the official)."""
    return [int(i) for i in np.linspace(0, num_views - 1, num_keyframes, dtype=int)]


def pooled_similarity(tokens: Sequence[torch.Tensor]) -> np.ndarray:
    """[V, V] cosine similarity of the views' mean-pooled encoder tokens (each [N_v, D]); diagonal 1."""
    pooled = torch.stack([torch.nn.functional.normalize(t.float(), dim=-1).mean(0) for t in tokens])
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return (pooled @ pooled.T).clamp(-1, 1).cpu().double().numpy()


def farthest_point_sampling(distance: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """``count`` indices, each the farthest (max of min distance) from those already picked; the first is
    drawn with ``seed``. Ties go to the lowest index."""
    n = len(distance)
    count = min(count, n)
    if count <= 0:
        return []
    first = int(np.random.default_rng(seed).integers(n))
    chosen, nearest = [first], distance[first].astype(np.float64).copy()
    while len(chosen) < count:
        nearest[chosen] = -np.inf
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, distance[nxt])
    return chosen


def order_keyframes(similarity: np.ndarray, anchors: Sequence[int]) -> list[int]:
    """The anchors reordered: largest summed similarity to the other anchors first, then repeatedly the anchor
    most similar to any already chosen one (so each keyframe overlaps the memory built before it)."""
    anchors = list(anchors)
    if len(anchors) <= 1:
        return anchors
    sub = similarity[np.ix_(anchors, anchors)].astype(np.float64).copy()
    np.fill_diagonal(sub, 0.0)
    order = [int(np.argmax(sub.sum(1)))]
    sub[:, order[0]] = -np.inf
    while len(order) < len(anchors):
        best = np.unravel_index(np.argmax(sub[order]), (len(order), len(anchors)))[1]
        order.append(int(best))
        sub[:, best] = -np.inf
    return [anchors[i] for i in order]


def retrieval_keyframes(similarity: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Keyframes by retrieval: FPS on 1 - S, then :func:`order_keyframes`."""
    anchors = farthest_point_sampling(1.0 - similarity, count, seed)
    return order_keyframes(similarity, anchors)


def choose_keyframes(method: str, tokens: Sequence[torch.Tensor], count: int, seed: int = 0) -> list[int]:
    """The job's keyframes from its encoder tokens. ``auto`` is ``linspace`` (the official default) until the
    MUSt3R retrieval weights are available to the engine; ``retrieval`` uses the training-free similarity."""
    if method not in METHODS:
        raise ValueError(f"keyframe method must be one of {METHODS}, got {method!r}")
    if method == "retrieval" and len(tokens) > 1:
        return retrieval_keyframes(pooled_similarity(tokens), count, seed)
    return linspace_keyframes(len(tokens), count)
