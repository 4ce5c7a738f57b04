"""ASMK image similarity from local descriptors, in numpy and torch (no faiss, no asmk package).

Tolias, Avrithis and Jégou, "To aggregate or not to aggregate: selective match kernels for image search",
ICCV 2013 (ASMK*, the binarised variant). Each descriptor is assigned to its nearest visual word(s) of a
codebook; an image's residuals to each word are summed, and the sum is binarised by sign. Two images compare
word by word: for the binary vectors b_X, b_Y of a shared word, u = <b_X, b_Y> / D = 1 - 2 h / D (h the
Hamming distance), and the selectivity function sigma(u) = sign(u) |u|^alpha for u > tau, else 0, is summed
over the shared words. Each image is normalised by its self-similarity, gamma(X) = (sum_c sigma(1))^-1/2 =
(its number of words)^-1/2. MUSt3R's settings (arXiv 2503.01661, §3.4): binary kernel, one word per
descriptor on the database side and five on the query side, tau = 0, alpha = 3, no IDF weighting. Every view
is both a query and a database image, so S[q, d] compares query view q with database view d.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int32)
_PAIR_CHUNK = 1 << 18  # word matches compared at once (bounds the XOR buffer to chunk * D/8 bytes)


@dataclass(frozen=True)
class AsmkParams:
    alpha: float = 3.0
    threshold: float = 0.0
    database_assignment: int = 1
    query_assignment: int = 5


@dataclass(frozen=True)
class WordSets:
    """Every image's aggregated, binarised residuals: one row per (image, word) it contains."""

    image: np.ndarray  # [E] int64
    word: np.ndarray  # [E] int64
    bits: np.ndarray  # [E, ceil(D / 8)] uint8, residual sign bits (1 where > 0)
    dim: int  # D
    num_words: np.ndarray  # [V] words per image


def assign(descriptors: torch.Tensor, centroids: torch.Tensor, k: int) -> torch.Tensor:
    """[N, D], [C, D] -> [N, min(k, C)] indices of the nearest centroids (L2), nearest first."""
    dist = torch.cdist(descriptors.float(), centroids.float())
    return dist.topk(min(k, len(centroids)), dim=1, largest=False).indices


def aggregate(
    descriptors: torch.Tensor, centroids: torch.Tensor, words: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: (words [W] sorted, summed residuals [W, D]) over its descriptors' assigned ``words`` [N, k]."""
    residuals = descriptors[:, None, :].float() - centroids[words].float()  # [N, k, D]
    unique, slot = torch.unique(words.flatten(), return_inverse=True)
    sums = torch.zeros(len(unique), descriptors.shape[1], dtype=torch.float32, device=descriptors.device)
    sums.index_add_(0, slot, residuals.reshape(-1, descriptors.shape[1]))
    return unique, sums


def word_sets(
    descriptors: Sequence[torch.Tensor], centroids: torch.Tensor, assigned: Sequence[torch.Tensor]
) -> WordSets:
    """Aggregate and binarise every image's descriptors over its assigned words (each [N_v, k])."""
    images, words, bits, counts = [], [], [], []
    for i, (desc, nearest) in enumerate(zip(descriptors, assigned)):
        unique, sums = aggregate(desc, centroids, nearest)
        images.append(np.full(len(unique), i, dtype=np.int64))
        words.append(unique.cpu().numpy().astype(np.int64))
        bits.append(np.packbits((sums > 0).cpu().numpy(), axis=1))
        counts.append(len(unique))
    dim = int(centroids.shape[1])
    return WordSets(
        np.concatenate(images), np.concatenate(words), np.concatenate(bits), dim, np.array(counts, dtype=np.float64)
    )


def selectivity(u: np.ndarray, alpha: float, threshold: float) -> np.ndarray:
    """sigma_alpha(u) = sign(u) |u|^alpha where u > threshold, else 0 (ASMK's selectivity function)."""
    return np.where(u > threshold, np.sign(u) * np.abs(u) ** alpha, 0.0)


def _matches(query: WordSets, database: WordSets) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, database row) pairs that share a word (the inverted file's lookup)."""
    order = np.argsort(database.word, kind="stable")
    sorted_words = database.word[order]
    lo = np.searchsorted(sorted_words, query.word, "left")
    counts = np.searchsorted(sorted_words, query.word, "right") - lo
    q_rows = np.repeat(np.arange(len(query.word)), counts)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return q_rows, order[starts + np.arange(len(q_rows))]


def similarity_from_words(query: WordSets, database: WordSets, num_views: int, params: AsmkParams) -> np.ndarray:
    """[V, V] ASMK* similarity, rows the query side, columns the database side."""
    total = np.zeros(num_views * num_views, dtype=np.float64)
    q_rows, d_rows = _matches(query, database)
    for start in range(0, len(q_rows), _PAIR_CHUNK):
        q, d = q_rows[start : start + _PAIR_CHUNK], d_rows[start : start + _PAIR_CHUNK]
        hamming = _POPCOUNT[np.bitwise_xor(query.bits[q], database.bits[d])].sum(1)
        u = 1.0 - 2.0 * hamming / query.dim
        cell = query.image[q] * num_views + database.image[d]
        total += np.bincount(cell, weights=selectivity(u, params.alpha, params.threshold), minlength=total.size)
    gamma_q = 1.0 / np.sqrt(np.maximum(query.num_words, 1.0))
    gamma_d = 1.0 / np.sqrt(np.maximum(database.num_words, 1.0))
    return total.reshape(num_views, num_views) * gamma_q[:, None] * gamma_d[None, :]


def asmk_similarity(
    descriptors: Sequence[torch.Tensor], centroids: np.ndarray | torch.Tensor, params: AsmkParams = AsmkParams()
) -> np.ndarray:
    """[V, V] similarity of the views' local descriptors (each [N_v, D]) with codebook ``centroids`` [C, D]."""
    device = descriptors[0].device if len(descriptors) else "cpu"
    centroids = torch.as_tensor(centroids, dtype=torch.float32, device=device)
    k_db, k_query = params.database_assignment, params.query_assignment
    nearest = [assign(d, centroids, max(k_db, k_query)) for d in descriptors]  # once: the sides are prefixes
    database = word_sets(descriptors, centroids, [n[:, :k_db] for n in nearest])
    query = word_sets(descriptors, centroids, [n[:, :k_query] for n in nearest])
    return similarity_from_words(query, database, len(descriptors), params)


def _asmk_similarity(
    descriptors: Sequence[torch.Tensor], centroids: np.ndarray | torch.Tensor, params: AsmkParams = AsmkParams()
) -> np.ndarray:
    """Reference twin of :func:`asmk_similarity`: the paper's formula with loops and +-1 vectors."""
    centroids = torch.as_tensor(centroids, dtype=torch.float64)

    def binary_words(desc: torch.Tensor, k: int) -> dict[int, np.ndarray]:
        sums: dict[int, torch.Tensor] = {}
        for x in desc.double():
            nearest = torch.argsort(((centroids - x) ** 2).sum(1), stable=True)[: min(k, len(centroids))]
            for c in nearest.tolist():
                sums[c] = sums.get(c, torch.zeros_like(x)) + (x - centroids[c])
        return {c: np.where(v.numpy() > 0, 1.0, -1.0) for c, v in sums.items()}

    query = [binary_words(d, params.query_assignment) for d in descriptors]
    database = [binary_words(d, params.database_assignment) for d in descriptors]
    out = np.zeros((len(descriptors), len(descriptors)))
    for i, qw in enumerate(query):
        for j, dw in enumerate(database):
            score = sum(
                selectivity(np.array(qw[c] @ dw[c] / len(qw[c])), params.alpha, params.threshold)
                for c in qw.keys() & dw.keys()
            )
            out[i, j] = score / np.sqrt(len(qw) * len(dw))
    return out
