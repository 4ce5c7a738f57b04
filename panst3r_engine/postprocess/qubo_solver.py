"""Deterministic minimiser of E(x) = xᵀAx + λ·mean(x) over x ∈ {0,1}^n (PanSt3R, arXiv 2506.21348, QUBO mask merging).

Rewritten as E(x) = dᵀx + ½ xᵀCx with d = diag(A) + λ/n and C = A + Aᵀ (zero diagonal).
Steps:
1. persistency: fix every variable whose flip gain has a fixed sign whatever the others are
   (valid for every optimum, so nothing is lost);
2. independent components of the remaining coupling graph (C_ij != 0);
3. components with <= ``max_exact`` variables: exhaustive search (meet in the middle);
4. larger ones: local search (1-flip, 2-flip, exact re-optimisation of strongly coupled groups)
   from greedy, grouped and ``restarts`` seeded random starts; the best state wins.
All randomness comes from ``np.random.default_rng(seed)``; same inputs and seed -> same output.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .common import Checkpoints, checkpoints_or_none

LAMBDA_REG = 1e-3


@dataclass(frozen=True)
class SolverConfig:
    """Solver knobs: exhaustive size limit, group size for block moves, random restarts."""

    max_exact: int = 20
    group_size: int = 12
    restarts: int = 32


def qubo_energy(a: np.ndarray, x: np.ndarray, lam: float = LAMBDA_REG) -> float:
    """E(x) = xᵀAx + λ·mean(x), in float64. a [n, n], x [n] in {0, 1}."""
    xf = np.asarray(x, np.float64)
    return float(xf @ np.asarray(a, np.float64) @ xf + lam * xf.mean()) if len(xf) else 0.0


def split_qubo(a: np.ndarray, lam: float = LAMBDA_REG) -> tuple[np.ndarray, np.ndarray]:
    """A [n, n] -> (d [n], C [n, n]) with E(x) = dᵀx + ½ xᵀCx."""
    a = np.asarray(a, np.float64)
    c = a + a.T
    np.fill_diagonal(c, 0.0)
    return np.diag(a) + lam / max(len(a), 1), c


def persistency(d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Variables fixed in every optimum: int8 [n], 0 / 1 fixed, -1 free."""
    state = np.full(len(d), -1, np.int8)
    cneg, cpos = np.minimum(c, 0.0), np.maximum(c, 0.0)
    while True:
        free, ones = (state < 0).astype(np.float64), (state == 1).astype(np.float64)
        base = d + c @ ones
        lo, hi = base + cneg @ free, base + cpos @ free
        to0, to1 = (state < 0) & (lo > 0), (state < 0) & (hi < 0)
        if not (to0.any() or to1.any()):
            return state
        state[to0], state[to1] = 0, 1


def exhaustive(d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact minimiser for small n (<= ~22) by meet in the middle; ties -> lowest code (bit i = x_i)."""
    n = len(d)
    if n == 0:
        return np.zeros(0, np.int8)
    k1 = n // 2
    lo_bits, hi_bits = _all_states(k1), _all_states(n - k1)
    e_lo = _energies(lo_bits, d[:k1], c[:k1, :k1])
    e_hi = _energies(hi_bits, d[k1:], c[k1:, k1:])
    total = e_lo[:, None] + e_hi[None, :] + lo_bits @ c[:k1, k1:] @ hi_bits.T
    best = int(np.argmin(total.T))  # row-major over (hi, lo): code = hi << k1 | lo
    i_hi, i_lo = divmod(best, len(lo_bits))
    return np.concatenate([lo_bits[i_lo], hi_bits[i_hi]]).astype(np.int8)


@lru_cache(maxsize=32)
def _all_states(k: int) -> np.ndarray:
    """[2^k, k] float64, row r = binary digits of r (bit i in column i). Cached: do not modify."""
    codes = np.arange(1 << k)
    states = ((codes[:, None] >> np.arange(k)[None, :]) & 1).astype(np.float64)
    states.flags.writeable = False
    return states


def _energies(bits: np.ndarray, d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """E for every row of bits [m, k]."""
    return bits @ d + 0.5 * np.einsum("mi,mi->m", bits @ c, bits)


def solve_qubo(
    a: np.ndarray,
    seed: int = 0,
    lam: float = LAMBDA_REG,
    cfg: SolverConfig = SolverConfig(),
    ck: Checkpoints | None = None,
) -> np.ndarray:
    """Minimise xᵀAx + λ·mean(x); returns x int8 [n]. ``ck``: progress/cancellation checkpoints
    (per component, per local-search start and per descent round)."""
    ck = checkpoints_or_none(ck)
    d, c = split_qubo(a, lam)
    x = persistency(d, c)
    free = np.flatnonzero(x < 0)
    x[x < 0] = 0
    if len(free) == 0:
        return x
    dfree = d[free] + c[np.ix_(free, np.flatnonzero(x == 1))].sum(1)
    cfree = c[np.ix_(free, free)]
    ncomp, label = connected_components(csr_matrix(cfree != 0), directed=False)
    rng = np.random.default_rng(seed)
    for comp in range(ncomp):
        comp_ck = ck.part(comp / ncomp, (comp + 1) / ncomp)
        comp_ck.tick(0.0, f"qubo solve: component {comp + 1}/{ncomp}")
        idx = np.flatnonzero(label == comp)
        sub_d, sub_c = dfree[idx], cfree[np.ix_(idx, idx)]
        if len(idx) <= cfg.max_exact:
            x[free[idx]] = exhaustive(sub_d, sub_c)
        else:
            x[free[idx]] = local_search_solve(sub_d, sub_c, rng, cfg, comp_ck)
    return x


def local_search_solve(
    d: np.ndarray, c: np.ndarray, rng: np.random.Generator, cfg: SolverConfig, ck: Checkpoints | None = None
) -> np.ndarray:
    """Best of several descents (greedy, grouped-exact, random starts) on dᵀx + ½xᵀCx."""
    ck = checkpoints_or_none(ck)
    groups = coupling_groups(c, cfg.group_size)
    starts = [np.zeros(len(d), np.int8), np.ones(len(d), np.int8), _group_start(d, c, groups)]
    starts += [rng.integers(0, 2, len(d)).astype(np.int8) for _ in range(cfg.restarts)]
    best_x, best_e = None, np.inf
    for k, x0 in enumerate(starts):
        start_ck = ck.part(k / len(starts), (k + 1) / len(starts))
        x = descend(d, c, x0, groups, start_ck)
        e = float(d @ x + 0.5 * x @ c @ x)
        if e < best_e:
            best_x, best_e = x, e
    return best_x


def coupling_groups(c: np.ndarray, size: int) -> list[np.ndarray]:
    """Clusters of 2..size variables joined along the strongest |C_ij| first (capped Kruskal
    over the 8n strongest couplings)."""
    n = len(c)
    iu, ju = np.triu_indices(n, 1)
    w = np.abs(c[iu, ju])
    top = min(len(w), 8 * n)
    order = np.argpartition(-w, top - 1)[:top] if top < len(w) else np.arange(len(w))
    order = order[np.lexsort((order, -w[order]))]  # strongest first, ties by index
    order = order[w[order] > 0]
    parent, count = list(range(n)), [1] * n

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(iu[order].tolist(), ju[order].tolist()):
        ra, rb = root(a), root(b)
        if ra != rb and count[ra] + count[rb] <= size:
            parent[rb], count[ra] = ra, count[ra] + count[rb]
    roots = np.array([root(i) for i in range(n)])
    return [np.flatnonzero(roots == r) for r in np.unique(roots) if (roots == r).sum() > 1]


def _group_start(d: np.ndarray, c: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Each group solved exactly on its own (couplings between groups ignored); singletons by sign."""
    x = (d < 0).astype(np.int8)
    for g in groups:
        x[g] = exhaustive(d[g], c[np.ix_(g, g)])
    return x


def descend(
    d: np.ndarray, c: np.ndarray, x0: np.ndarray, groups: list[np.ndarray], ck: Checkpoints | None = None
) -> np.ndarray:
    """Local search to a state no 1-flip, 2-flip or single-group re-optimisation improves."""
    ck = checkpoints_or_none(ck)
    x = x0.astype(np.int8).copy()
    tol = 1e-13 * (np.abs(d).sum() + np.abs(c).sum() + 1e-300)
    while True:
        ck.tick(0.0, "qubo solve: local search")
        x = _descend_1flip(d, c, x, tol)
        if _try_2flip(d, c, x, tol) or _try_groups(d, c, x, groups, tol):
            continue
        return x


def _descend_1flip(d: np.ndarray, c: np.ndarray, x: np.ndarray, tol: float) -> np.ndarray:
    """Best-improvement single flips until none gains more than tol."""
    field = d + c @ x
    while True:
        gain = (1 - 2 * x) * field
        i = int(np.argmin(gain))
        if gain[i] >= -tol:
            return x
        x[i] ^= 1
        field += c[:, i] * (1.0 if x[i] else -1.0)


def _try_2flip(d: np.ndarray, c: np.ndarray, x: np.ndarray, tol: float) -> bool:
    """Apply the best improving pair flip, if any (in place)."""
    s = 1.0 - 2.0 * x
    gain = s * (d + c @ x)
    pair = gain[:, None] + gain[None, :] + np.outer(s, s) * c
    np.fill_diagonal(pair, np.inf)
    k = int(np.argmin(pair))
    if pair.flat[k] >= -tol:
        return False
    i, j = divmod(k, len(x))
    x[i] ^= 1
    x[j] ^= 1
    return True


def _try_groups(d: np.ndarray, c: np.ndarray, x: np.ndarray, groups: list[np.ndarray], tol: float) -> bool:
    """Re-optimise each group exactly given the rest; True if any strictly improved (in place)."""
    improved = False
    for g in groups:
        rest = x.astype(np.float64)
        rest[g] = 0.0
        dg, cg = d[g] + c[g] @ rest, c[np.ix_(g, g)]
        xg = exhaustive(dg, cg)
        old = x[g].astype(np.float64)
        e_new = dg @ xg + 0.5 * xg @ cg @ xg
        if e_new < dg @ old + 0.5 * old @ cg @ old - tol:
            x[g] = xg
            improved = True
    return improved
