"""Which photos become keyframes (MUSt3R's memory), and in which order.

``linspace`` is the official default: evenly spaced indices, fine for an ordered walk-through but arbitrary
for an unordered folder. ``retrieval`` picks views that are far apart in appearance and orders them so each
keyframe overlaps the ones before it, as MUSt3R does (arXiv 2503.01661, keyframe selection by retrieval):
farthest-point sampling on 1 - S, then the view with the largest summed similarity first and, greedily, the
view most similar to any chosen one. MUSt3R's similarity S comes from its retrieval head (ASMK over the
encoder tokens); without those weights this module can use a training-free S: the cosine similarity of the
views' mean-pooled, L2-normalised encoder tokens. Unlike the official code the first FPS anchor is seeded,
so the choice is deterministic.

Which similarity is used: MUSt3R's retrieval head with ASMK (:mod:`panst3r_engine.model.retrieval`,
:mod:`panst3r_engine.pipeline.asmk`) when its files are given or in the cache; otherwise ``retrieval`` falls
back to the training-free similarity with a warning, and ``auto`` means ``linspace``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.retrieval import Retrieval, RetrievalError, codebook_path, load_retrieval
from panst3r_engine.pipeline.asmk import asmk_similarity
from panst3r_engine.pipeline.options import KEYFRAME_METHODS as METHODS
from panst3r_engine.weights.registry import DOWNLOAD_HINT, RETRIEVAL_ID, weights_path

log = logging.getLogger(__name__)
_DOWNLOAD = f"run `{DOWNLOAD_HINT.format(id=RETRIEVAL_ID)}` (it fetches the head and its codebook)"


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


def retrieval_similarity(retrieval: Retrieval, tokens: Sequence[torch.Tensor]) -> np.ndarray:
    """[V, V] ASMK similarity of the views' retrieval descriptors (computed on each view's encoder tokens)."""
    device = tokens[0].device
    head = retrieval.head.to(device)
    descriptors = [head.local_descriptors(t.to(device)) for t in tokens]
    return asmk_similarity(descriptors, torch.as_tensor(retrieval.codebook, device=device))


def choose_keyframes(
    method: str, tokens: Sequence[torch.Tensor], count: int, seed: int = 0, retrieval: Retrieval | None = None
) -> list[int]:
    """The job's keyframes from its encoder tokens. ``retrieval`` uses the MUSt3R head when one is given, else
    the training-free similarity; ``auto`` is retrieval with the head when given, else ``linspace``."""
    return KeyframeChooser(method, count, seed, retrieval)(tokens)


class KeyframeChooser:
    """Chooses a job's keyframes from its encoder tokens (a callable for ``run_inference``) and remembers how:
    ``used`` goes into the manifest's options, ``warnings`` into its warnings."""

    def __init__(
        self,
        method: str,
        count: int,
        seed: int = 0,
        retrieval: Retrieval | None = None,
        warnings: Sequence[str] = (),
        named: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"keyframe method must be one of {METHODS}, got {method!r}")
        self.method, self.count, self.seed, self.retrieval = method, count, seed, retrieval
        self.warnings: list[str] = list(warnings)
        self.used = {"keyframes_by": "linspace", "keyframes_similarity": None}
        self.named = named  # the head was named explicitly: a mismatch is an error, not a fallback

    @classmethod
    def for_job(cls, method: str, count: int, seed: int = 0, retrieval_path: str | None = None) -> KeyframeChooser:
        """A chooser with the retrieval head loaded now (so bad files fail before inference) when it may be used."""
        if method == "linspace":
            return cls(method, count, seed)
        retrieval, warnings = find_retrieval(retrieval_path)
        return cls(method, count, seed, retrieval, warnings, named=retrieval_path is not None)

    def __call__(self, tokens: Sequence[torch.Tensor]) -> list[int]:
        if self.retrieval is not None and len(tokens) and tokens[0].shape[-1] != self.retrieval.head.cfg.in_dim:
            problem = (
                f"the retrieval head {self.retrieval.checkpoint} takes {self.retrieval.head.cfg.in_dim}-d encoder "
                f"tokens but this model's have {tokens[0].shape[-1]}"
            )
            if self.named:
                raise RetrievalError(f"{problem}; name the retrieval files made for this model's encoder")
            self.retrieval = None
            self.warnings.append(f"MUSt3R's retrieval head was not used: {problem}")
        use_retrieval = self.method == "retrieval" or (self.method == "auto" and self.retrieval is not None)
        if not use_retrieval or len(tokens) < 2:
            return linspace_keyframes(len(tokens), self.count)
        if self.retrieval is not None:
            similarity, name = retrieval_similarity(self.retrieval, tokens), "must3r"
        else:
            similarity, name = pooled_similarity(tokens), "training-free"
            self.warnings.append(
                "keyframes were chosen by retrieval with the training-free similarity (pooled encoder tokens) "
                f"because MUSt3R's retrieval head is not available; for MUSt3R's own, {_DOWNLOAD}"
            )
        self.used = {"keyframes_by": "retrieval", "keyframes_similarity": name}
        return retrieval_keyframes(similarity, self.count, self.seed)


def find_retrieval(path: str | os.PathLike | None = None) -> tuple[Retrieval | None, list[str]]:
    """(head or None, warnings). A named file must load (else :class:`PanSt3RError`); the cache's files are
    used when both are there, and a broken pair in the cache is skipped with a warning."""
    if path is not None:
        return _load_cached(*_stamp(Path(path).expanduser())), []
    checkpoint = weights_path(RETRIEVAL_ID)
    if not checkpoint.is_file() or not codebook_path(checkpoint).is_file():
        return None, []
    try:
        return _load_cached(*_stamp(checkpoint)), []
    except PanSt3RError as exc:
        log.warning("retrieval head not used: %s", exc)
        return None, [
            f"the MUSt3R retrieval files in the cache could not be used, so keyframes were chosen without them: {exc}"
        ]


def _stamp(checkpoint: Path) -> tuple[Path, int, int, int, int]:
    """The files and their sizes and times, so that a changed file is loaded again."""
    book = codebook_path(checkpoint)
    stats = [p.stat() if p.is_file() else None for p in (checkpoint, book)]
    sizes_times = [v for st in stats for v in ((st.st_size, st.st_mtime_ns) if st else (-1, -1))]
    return (checkpoint, *sizes_times)


@functools.lru_cache(maxsize=2)
def _load_cached(checkpoint: Path, *stamp: int) -> Retrieval:
    """The loaded head, kept while its files do not change (a service loads it once for many jobs)."""
    return load_retrieval(checkpoint)
