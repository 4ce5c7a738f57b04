"""Plain twin of the official simulated annealer (PanSt3R, arXiv 2506.21348: QUBO solved by simulated annealing).

Used by tests to compare objectives and to reproduce the fixture's QUBO output; slow on purpose
(one Python iteration per flip). Draws from numpy's *legacy global* RNG in the official order:
``np.random.seed(seed)`` (when seed is not None), then per restart ``randint(0, 2, n)``, then per
flip ``randint(n)``, and ``rand()`` only when the flip does not lower the energy. The energy
change is the exact delta of E(x) = xᵀAx + λ·mean(x), in float64.
"""

from __future__ import annotations

import math

import numpy as np

from .qubo_solver import LAMBDA_REG, qubo_energy, split_qubo

NUM_REDO = 20
NUM_ITER = 10_000
T_START, T_END = 0.5, 1e-4


def anneal_reference(
    a: np.ndarray,
    seed: int | None = 0,
    lam: float = LAMBDA_REG,
    num_redo: int = NUM_REDO,
    num_iter: int = NUM_ITER,
) -> tuple[np.ndarray, float]:
    """Best state over ``num_redo`` annealing runs -> (x int64 [n], E(x)); ties keep the earlier."""
    if seed is not None:
        np.random.seed(seed)
    d, c = split_qubo(a, lam)
    n = len(d)
    cool = (T_END / T_START) ** (1.0 / num_iter)
    best_x, best_e = None, math.inf
    for _ in range(num_redo):
        x = np.random.randint(0, 2, n)
        x, e, run_best_x, run_best_e = _one_run(x, d, c, cool, num_iter, a, lam)
        if run_best_e < best_e:
            best_x, best_e = run_best_x, run_best_e
    return best_x, qubo_energy(a, best_x, lam)


def _one_run(
    x: np.ndarray, d: np.ndarray, c: np.ndarray, cool: float, num_iter: int, a: np.ndarray, lam: float
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """One annealing run from x (modified in place) -> (x, E, best x, best E)."""
    n = len(x)
    e = qubo_energy(a, x, lam)
    field = d + c @ x
    best_x, best_e = x.copy(), e
    temp = T_START
    for _ in range(num_iter):
        k = np.random.randint(n)
        delta = (1 - 2 * x[k]) * field[k]
        if delta < 0 or np.random.rand() < math.exp(-delta / temp):
            x[k] ^= 1
            field += c[:, k] * (1.0 if x[k] else -1.0)
            e += delta
            if e < best_e:
                best_x, best_e = x.copy(), e
        temp *= cool
    return x, e, best_x, best_e
