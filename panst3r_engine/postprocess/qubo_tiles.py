"""Tile statistics of a bilinearly resized map, computed from the small map (for QUBO weights).

The resize (align_corners=False, PyTorch's source-index rule) is a linear map per axis,
M = R_h P R_wᵀ with R [n_out, n_in] holding two non-negative weights per row that sum to 1.
For output tiles of ``tile`` x ``tile`` pixels:
* tile sums = B_h P B_wᵀ, with B the rows of R summed per tile (exact up to rounding);
* every resized value in a tile is a convex combination of P over the tile's source window, so
  the window max/min bound the tile max/min;
* the resized values of one tile come from its window alone (a small local resize).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] float64 bilinear weights (align_corners=False, size given)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1.0 - lam, accumulate=True)
    m.index_put_((rows, i1), lam, accumulate=True)
    return m


@dataclass
class AxisTiles:
    """One axis: block [nk, n_in] summed weights, window lo/hi [nk] (inclusive), local [nk, tile, S]."""

    block: torch.Tensor
    lo: list[int]
    hi: list[int]
    local: torch.Tensor


def axis_tiles(n_in: int, n_out: int, tile: int) -> AxisTiles:
    """Tiles of ``tile`` output pixels along one axis (the last one may be partial)."""
    m = resize_matrix(n_in, n_out)
    starts = list(range(0, n_out, tile))
    block = torch.stack([m[a : a + tile].sum(0) for a in starts])
    support = [torch.nonzero(m[a : a + tile].sum(0) > 0).flatten() for a in starts]
    lo, hi = [int(s.min()) for s in support], [int(s.max()) for s in support]
    width = max(h - a + 1 for a, h in zip(lo, hi))
    local = torch.zeros(len(starts), tile, width, dtype=torch.float64)
    for k, a in enumerate(starts):
        part = m[a : a + tile, lo[k] : lo[k] + width]
        local[k, : part.shape[0], : part.shape[1]] = part
    return AxisTiles(block, lo, hi, local.float())


@dataclass
class TileGeometry:
    """Row and column tiling of one view; tiles are numbered row-major, t = a * n_cols + b."""

    rows: AxisTiles
    cols: AxisTiles

    def sums(self, p: torch.Tensor) -> torch.Tensor:
        """[Q, h, w] -> tile sums of the resized map [nt, Q] float64 (columns in float32, rows in float64)."""
        s = self.rows.block @ (p @ self.cols.block.T.float()).double()  # [Q, nh, nw]
        return s.flatten(1).T.contiguous()

    def window_max(self, p: torch.Tensor) -> torch.Tensor:
        """[Q, h, w] -> upper bound of each tile's max [nt, Q]."""
        return self._window_reduce(p, True)

    def window_min(self, p: torch.Tensor) -> torch.Tensor:
        """[Q, h, w] -> lower bound of each tile's min [nt, Q]."""
        return self._window_reduce(p, False)

    def _window_reduce(self, p: torch.Tensor, largest: bool) -> torch.Tensor:
        """Max (or min) of p over each tile's source window, as [nt, Q]."""
        r = _axis_reduce(p, 1, self.rows, largest)  # [Q, nh, w]
        return _axis_reduce(r, 2, self.cols, largest).flatten(1).T.contiguous()

    def tile_values(self, p: torch.Tensor, t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Resized values of query q[k] on tile t[k]: [M, tile, tile] float32 (0 past the view)."""
        nw = len(self.cols.lo)
        a, b = t // nw, t % nw
        sh, sw = self.rows.local.shape[2], self.cols.local.shape[2]
        # window positions past the map have weight 0: clamp them to any valid pixel
        rows = (torch.as_tensor(self.rows.lo)[a][:, None] + torch.arange(sh)).clamp(max=p.shape[1] - 1)
        cols = (torch.as_tensor(self.cols.lo)[b][:, None] + torch.arange(sw)).clamp(max=p.shape[2] - 1)
        patch = p[q[:, None, None], rows[:, :, None], cols[:, None, :]]  # [M, sh, sw]
        return self.rows.local[a] @ patch @ self.cols.local[b].transpose(1, 2)


def _axis_reduce(x: torch.Tensor, dim: int, axis: AxisTiles, largest: bool) -> torch.Tensor:
    """Reduce ``x`` along ``dim`` over each window [lo_k, hi_k] -> size nk along ``dim``.

    Regular windows (stride-s cores plus a few halo lines) use one reshaped reduction; irregular
    ones fall back to one slice per window.
    """
    red, comb = (torch.amax, torch.maximum) if largest else (torch.amin, torch.minimum)
    plan = _core_halo_plan(axis)
    if plan is None:
        return torch.stack([red(x.narrow(dim, lo, hi - lo + 1), dim=dim) for lo, hi in zip(axis.lo, axis.hi)], dim)
    stride, left, right = plan
    n, nk = x.shape[dim], len(axis.lo)
    ks = torch.arange(nk)
    if nk * stride > n:  # last core past the map: repeat its last line (inside that window)
        core = x.index_select(dim, torch.arange(nk * stride).clamp(max=n - 1))
    else:
        core = x.narrow(dim, 0, nk * stride)
    out = red(core.unflatten(dim, (nk, stride)), dim=dim + 1)
    halo = [ks * stride - h for h in range(1, left + 1)] + [(ks + 1) * stride + h for h in range(right)]
    for idx in halo:  # clamped lines repeat a line of the same window
        out = comb(out, x.index_select(dim, idx.clamp(0, n - 1)))
    return out


def _core_halo_plan(axis: AxisTiles) -> tuple[int, int, int] | None:
    """(stride, left, right) with window k = [k·stride - left, (k+1)·stride + right - 1] clipped
    to the map, if that describes every window; else None."""
    n_in, nk = axis.block.shape[1], len(axis.lo)
    candidates = {axis.lo[1] - axis.lo[0], axis.hi[1] - axis.hi[0]} if nk > 1 else {axis.hi[0] + 1}
    for stride in sorted(c for c in candidates if c > 0):
        left = max(stride * k - lo for k, lo in enumerate(axis.lo))
        right = axis.hi[0] - stride + 1
        windows = [(max(k * stride - left, 0), min((k + 1) * stride + right - 1, n_in - 1)) for k in range(nk)]
        if left >= 0 and right >= 0 and windows == list(zip(axis.lo, axis.hi)):
            return stride, left, right
    return None


@lru_cache(maxsize=16)
def tile_geometry(small: tuple[int, int], shape: tuple[int, int], tile: int) -> TileGeometry:
    """Geometry for resizing (h, w) = small to (H, W) = shape in tiles of ``tile`` pixels."""
    return TileGeometry(axis_tiles(small[0], shape[0], tile), axis_tiles(small[1], shape[1], tile))
