"""QUBO weights (PanSt3R, arXiv 2506.21348): soft areas a_i and soft overlaps o_ij.

a_i = Σ M_i and o_ij = Σ min(M_i, M_j) over every pixel of every view, where M is the
full-resolution probability (sigmoid at stride 2, then bilinear resize); padding is 0 and adds
nothing. Input here is the stride-2 probability P; pixels are grouped in square tiles of the
output, and for tile t: s_i = Σ_t M_i; query i is *active* in t if its max there exceeds ``tau``.

* ``tau == 0`` (exact): each view is resized in full and, per tile,
  Σ min(M_i, M_j) = (s_i + s_j - ‖M_i - M_j‖₁) / 2 for all pairs i < j (SciPy ``pdist`` per tile).
* ``tau > 0`` (fast, never resizes the whole view): bilinear resizing is linear, M = R_h P R_wᵀ,
  so tile sums are B_h P B_wᵀ (B = tile-summed rows of R) and the tile max/min are bounded by the
  max/min of P over the tile's source window. Pairs active together in a tile are summed
  exactly on that tile (resized locally); every other pair gets min(s_i, s_j), an upper bound of
  its tile term, which is exact when one mask lies below the other on the whole tile (checked
  when one of the two is active); otherwise its error is at most min(s_i, s_j) <= tau·tile²,
  summed into ``bound``. Hence overlap - bound <= true overlap <= overlap, entry by entry
  (up to float32 rounding). Σ_t min(s_i, s_j) over all tiles is one L1 ``cdist``.
Sums are float64.

Cost: the exact tile terms are k(k-1)/2 pairs × tile² pixels for k queries present in a tile. Masks of a
trained head are sparse (k is small); dense, low-confidence masks (untrained or random weights: every
query above ``tau`` everywhere) make k = Q on every tile, i.e. Q²/2 · pixels minima whatever ``tau``.
Tiles with more than ``PDIST_MIN_QUERIES`` of them are computed over the upper triangle only, by SciPy's
``pdist`` (a C loop that releases the GIL, run on ``torch.get_num_threads()`` threads): about 3.5x less CPU
than ``torch.cdist`` (which computes both halves) on [200, 1024] tiles. Fewer stay in one padded ``cdist``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.spatial.distance import pdist

from .common import Checkpoints, checkpoints_or_none, upsample
from .qubo_tiles import TileGeometry, tile_geometry

TILE = 32
ACTIVE_CHUNK = 16  # tiles per exact batch (one gather of local resizes, one thread-pool map)
PDIST_MIN_QUERIES = 32  # a chunk whose busiest tile has more active queries goes tile by tile through pdist


@dataclass
class OverlapStats:
    """area [Q], overlap [Q, Q] (diag = area) and its max error bound [Q, Q] (0 = exact)."""

    area: np.ndarray
    overlap: np.ndarray
    bound: np.ndarray
    pair_pixels: int = 0  # work: pixel minima computed for exact tile terms (one per pair i < j and pixel)


def soft_overlaps(
    probs: Sequence[torch.Tensor],
    shapes: Sequence[tuple[int, int]],
    tau: float = 0.0,
    tile: int = TILE,
    ck: Checkpoints | None = None,
    kernel: str = "pdist",
) -> OverlapStats:
    """probs: per view stride-2 probabilities [Q, h_v, w_v]; shapes: output (H_v, W_v).

    ``ck``: progress/cancellation checkpoints (per view and per tile batch). ``kernel``: see :class:`PairTerms`."""
    terms = PairTerms(kernel)
    q = probs[0].shape[0]
    over = torch.zeros(q, q, dtype=torch.float64)
    bound = torch.zeros(q, q, dtype=torch.float64)
    tile_sums = []
    ck = checkpoints_or_none(ck)
    for v, (p, shape) in enumerate(zip(probs, shapes)):
        view_ck = ck.part(v / len(shapes), (v + 1) / len(shapes))
        view_ck.tick(0.0, f"qubo weights: view {v + 1}/{len(shapes)}")
        if tau > 0:
            geo = tile_geometry(tuple(p.shape[1:]), tuple(shape), tile)
            tile_sums.append(_sparse_view(p, geo, tau, over, bound, terms, view_ck))
        else:
            tile_sums.append(_dense_view(upsample(p, shape), tile, over, terms, view_ck))
    s = torch.cat(tile_sums).T.contiguous()  # [Q, all tiles]
    if tau > 0:
        est = _pair_minsum(s[None])[0]  # Σ_t min(s_i, s_j)
        over += est
        bound += est
    area = s.sum(1)
    over.diagonal().copy_(area)
    bound.diagonal().zero_()
    return OverlapStats(area.numpy(), over.numpy(), bound.numpy(), terms.pixels)


def _pair_minsum(x: torch.Tensor) -> torch.Tensor:
    """[B, K, T] -> [B, K, K] Σ_t min(x_i, x_j) in float64, via (s_i + s_j - L1) / 2."""
    xd = x.to(torch.float64)
    s = xd.sum(-1)
    return 0.5 * (s[:, :, None] + s[:, None, :] - torch.cdist(xd, xd, p=1))


@lru_cache(maxsize=8)
def _upper_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each entry of a condensed (``pdist``) vector over k items: the pairs i < j."""
    return np.triu_indices(k, 1)


@dataclass
class PairTerms:
    """Exact tile terms Σ_t min(x_i, x_j) over the pairs i < j, and a count of the work done.

    kernel "pdist": SciPy's ``pdist`` (a C loop over the upper triangle that releases the GIL), the
    tiles spread over ``torch.get_num_threads()`` threads; "cdist": ``torch.cdist`` over both
    halves (the former kernel, kept as the reference twin for tests and the benchmark).
    """

    kernel: str = "pdist"
    pixels: int = 0

    def __post_init__(self) -> None:
        if self.kernel not in ("pdist", "cdist"):
            raise ValueError(f"unknown pair kernel {self.kernel!r}; expected 'pdist' or 'cdist'")

    def minsums(self, tiles: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Per tile [k, T] values -> condensed [k(k-1)/2] float64 min-sums (pairs in ``_upper_pairs`` order)."""
        self.pixels += sum(len(x) * (len(x) - 1) // 2 * x.shape[1] for x in tiles)
        if self.kernel == "cdist":
            return [_pair_minsum(x[None])[0][_upper_pairs(len(x))].numpy() for x in tiles]
        if len(tiles) < 2 or torch.get_num_threads() < 2:
            return [_upper_minsums(x) for x in tiles]
        with ThreadPoolExecutor(min(torch.get_num_threads(), len(tiles))) as pool:
            return list(pool.map(_upper_minsums, tiles))


def _upper_minsums(x: torch.Tensor) -> np.ndarray:
    """[k, T] -> condensed Σ_t min(x_i, x_j), i < j: (s_i + s_j - ‖x_i - x_j‖₁) / 2 as :func:`_pair_minsum`."""
    xd = x.to(torch.float64).numpy()
    s = xd.sum(1)
    iu, ju = _upper_pairs(len(xd))
    return 0.5 * (s[iu] + s[ju] - pdist(xd, "cityblock"))


def _dense_view(
    m: torch.Tensor, tile: int, over: torch.Tensor, terms: PairTerms, ck: Checkpoints, batch: int = 8
) -> torch.Tensor:
    """Exact: add every pair's min-sum of one resized view [Q, H, W] to ``over``; -> tile sums [nt, Q]."""
    q, h, w = m.shape
    m = torch.nn.functional.pad(m, (0, -w % tile, 0, -h % tile))
    nh, nw = m.shape[1] // tile, m.shape[2] // tile
    x = m.reshape(q, nh, tile, nw, tile).permute(1, 3, 0, 2, 4).reshape(nh * nw, q, tile * tile)
    upper = np.zeros(q * (q - 1) // 2)
    for start in range(0, x.shape[0], batch):
        ck.tick(start / x.shape[0], "qubo weights (exact)")
        for minsums in terms.minsums(list(x[start : start + batch])):
            upper += minsums
    iu, ju = _upper_pairs(q)
    over[iu, ju] += torch.from_numpy(upper)
    over[ju, iu] += torch.from_numpy(upper)
    return x.sum(-1, dtype=torch.float64)


def _sparse_view(
    p: torch.Tensor,
    geo: TileGeometry,
    tau: float,
    over: torch.Tensor,
    bound: torch.Tensor,
    terms: PairTerms,
    ck: Checkpoints,
) -> torch.Tensor:
    """Fast mode, one view: sparse corrections to Σ_t min(s_i, s_j); -> tile sums [nt, Q].

    Adds (exact - estimate) for pairs active together to ``over``; subtracts from ``bound`` the
    estimate of pairs whose tile term is known exactly (both active, or dominated).
    """
    s, mx, mn = geo.sums(p), geo.window_max(p), geo.window_min(p)  # [nt, Q] each
    active = mx > tau
    for start in range(0, len(active), ACTIVE_CHUNK):
        ck.tick(start / len(active), "qubo weights (fast)")
        chunk = torch.arange(start, min(start + ACTIVE_CHUNK, len(active)))
        _active_pairs(p, geo, chunk, active, s, over, bound, terms)
    # one of the pair active (j = qa[k] on tile ta[k]), the other (i) not: exact if dominated
    ta, qa = torch.nonzero(active & (~active).any(1, keepdim=True)).unbind(1)  # tiles where some are inactive
    known = ~active[ta] & (mx[ta] <= mn[ta, qa][:, None])  # [Ka, Q]
    est = torch.minimum(s[ta], s[ta, qa][:, None]) * known
    per_j = torch.nn.functional.one_hot(qa, p.shape[0]).double().T @ est  # [Q (j), Q (i)]
    bound -= per_j + per_j.T
    return s


def _active_pairs(
    p: torch.Tensor,
    geo: TileGeometry,
    tiles: torch.Tensor,
    active: torch.Tensor,
    s: torch.Tensor,
    over: torch.Tensor,
    bound: torch.Tensor,
    terms: PairTerms,
) -> None:
    """Exact tile terms of the pairs active together on ``tiles`` [nc] (values padded to the busiest tile)."""
    counts = active[tiles].sum(1)
    kmax = int(counts.max())
    if kmax < 2:
        return
    slots = torch.argsort((~active[tiles]).to(torch.int8), dim=1, stable=True)[:, :kmax]  # active queries first
    valid = torch.arange(kmax)[None, :] < counts[:, None]  # [nc, kmax]
    values = torch.zeros(len(tiles), kmax, geo.rows.local.shape[1] * geo.cols.local.shape[1])
    values[valid] = geo.tile_values(p, tiles[:, None].expand_as(slots)[valid], slots[valid]).flatten(1)
    if kmax > PDIST_MIN_QUERIES:
        _add_upper_terms(tiles, slots, counts.tolist(), values, s, over, bound, terms)
        return
    terms.pixels += int((counts * (counts - 1) // 2).sum()) * values.shape[2]
    exact = _pair_minsum(values)  # [nc, kmax, kmax]: few queries per tile, one padded batch
    sv = s[tiles[:, None], slots]
    est = torch.minimum(sv[:, :, None], sv[:, None, :])
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(kmax, dtype=torch.bool)
    qi, qj = slots[:, :, None].expand_as(pair)[pair], slots[:, None, :].expand_as(pair)[pair]
    over.index_put_((qi, qj), (exact - est)[pair], accumulate=True)
    bound.index_put_((qi, qj), -est[pair], accumulate=True)


def _add_upper_terms(
    tiles: torch.Tensor,
    slots: torch.Tensor,
    counts: list[int],
    values: torch.Tensor,
    s: torch.Tensor,
    over: torch.Tensor,
    bound: torch.Tensor,
    terms: PairTerms,
) -> None:
    """Many queries per tile (dense masks): each tile's pairs i < j through :class:`PairTerms`, added both ways."""
    big = [c for c, k in enumerate(counts) if k >= 2]
    sn = s.numpy()
    qi, qj, diff, est = [], [], [], []
    for c, exact in zip(big, terms.minsums([values[c, : counts[c]] for c in big])):
        qs = slots[c, : counts[c]].numpy()
        iu, ju = _upper_pairs(counts[c])
        e = np.minimum(sn[int(tiles[c]), qs[iu]], sn[int(tiles[c]), qs[ju]])
        qi.append(qs[iu])
        qj.append(qs[ju])
        diff.append(exact - e)
        est.append(e)
    a, b = torch.from_numpy(np.concatenate(qi)), torch.from_numpy(np.concatenate(qj))
    d, e = torch.from_numpy(np.concatenate(diff)), torch.from_numpy(np.concatenate(est))
    for i, j in ((a, b), (b, a)):
        over.index_put_((i, j), d, accumulate=True)
        bound.index_put_((i, j), -e, accumulate=True)
