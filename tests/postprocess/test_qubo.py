"""QUBO post-processing: official-annealer twin parity, our solver's optimality and determinism,
weights (exact and fast with bound), decoding edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.bench_qubo import make_dense_inputs
from panst3r_engine.postprocess import QuboConfig, postprocess, qubo_tiles
from panst3r_engine.postprocess._reference import anneal_reference
from panst3r_engine.postprocess.common import class_probs, mask_probs, mask_probs_low_res, shapes_list, upsample
from panst3r_engine.postprocess.qubo import decode_selection, qubo_matrix, qubo_norm
from panst3r_engine.postprocess.qubo_solver import (
    SolverConfig,
    exhaustive,
    persistency,
    qubo_energy,
    solve_qubo,
    split_qubo,
)
from panst3r_engine.postprocess.qubo_tiles import tile_geometry
from panst3r_engine.postprocess.qubo_weights import PDIST_MIN_QUERIES, OverlapStats, soft_overlaps
from tests.parity_utils import load_case


def brute_force(a: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimum energy over all 2^n states, and every state's energy."""
    n = len(a)
    states = ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    energies = np.einsum("mi,ij,mj->m", states, a, states) + 1e-3 * states.mean(1)
    return float(energies.min()), energies


def random_qubo(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """'general': symmetric Gaussian; 'masks': the post-processing's sign pattern (A_ii < 0 <= A_ij)."""
    if kind == "general":
        a = rng.normal(size=(n, n))
        return (a + a.T) / 2
    area = rng.uniform(1e-3, 0.1, n)
    over = rng.uniform(0, 1, (n, n)) ** 4 * np.minimum.outer(area, area)
    a = (over + over.T) / 2
    np.fill_diagonal(a, -area)
    return a


@pytest.fixture(scope="module")
def pp_case(parity_dir):
    arrays, meta = load_case(parity_dir, "postproc")
    shapes = shapes_list(arrays["pp_in_true_shape"])
    probs = mask_probs_low_res(list(arrays["pp_in_pred_masks"]), shapes)
    a = qubo_matrix(soft_overlaps(probs, shapes), qubo_norm(shapes))
    return arrays, meta, shapes, probs, a


def check_against_fixture(res, arrays, meta):
    """Pan/conf within the parity README's tolerances, segments_info identical."""
    pan = np.stack(res.pan)
    agree = pan == arrays["pp_qubo_pan"]
    assert (~agree).mean() <= 5e-4
    assert np.abs(np.stack(res.conf) - arrays["pp_qubo_conf"])[agree].max() <= 1e-5
    ref = meta["segments_info"]["qubo"]
    assert [(s["id"], s["query_id"], s["category_id"], s["area"]) for s in res.segments] == [
        (s["id"], s["query_id"], s["category_id"], s["area"]) for s in ref
    ]
    for ours, theirs in zip(res.segments, ref):
        assert ours["class_prob"] == pytest.approx(theirs["class_prob"], abs=1e-5)
        assert ours["mask_conf"] == pytest.approx(theirs["mask_conf"], abs=1e-5)


def test_reference_annealer_reproduces_fixture(pp_case):
    arrays, meta, shapes, probs, a = pp_case
    x, energy = anneal_reference(a, seed=0)
    assert energy == pytest.approx(qubo_energy(a, x), abs=1e-12)
    res = decode_selection(class_probs(arrays["pp_in_pred_logits"]), probs, shapes, np.flatnonzero(x))
    check_against_fixture(res, arrays, meta)


@pytest.mark.parametrize("tau", [None, 0.0, 1e-3])
def test_ours_matches_fixture_and_beats_annealer(pp_case, tau):
    arrays, meta, shapes, probs, a = pp_case
    inputs = (arrays["pp_in_pred_logits"], list(arrays["pp_in_pred_masks"]), arrays["pp_in_true_shape"])
    res = postprocess(*inputs, "qubo", qubo=QuboConfig(tau=tau))
    check_against_fixture(res, arrays, meta)
    x = np.zeros(len(a), np.int8)
    x[res.info["selected"]] = 1
    assert qubo_energy(a, x) <= anneal_reference(a, seed=0)[1] + 1e-12
    assert qubo_energy(a, x) == pytest.approx(brute_force(a)[0], abs=1e-12)


def test_exact_weights_match_brute_force(pp_case):
    arrays, _, shapes, probs, _ = pp_case
    full = torch.stack(mask_probs(list(arrays["pp_in_pred_masks"]), shapes), 1).flatten(1).double()
    brute = torch.minimum(full[:, None], full[None]).sum(-1).numpy()
    stats = soft_overlaps(probs, shapes)
    np.testing.assert_allclose(stats.overlap, brute, rtol=1e-9, atol=1e-6)
    assert (stats.bound == 0).all()
    for tau in (1e-2, 1e-3, 1e-4):  # fast weights: overlap - bound <= true <= overlap (float32 slack)
        fast = soft_overlaps(probs, shapes, tau=tau)
        slack = 1e-6 * brute.max()
        assert (fast.overlap >= brute - slack).all() and (fast.overlap - fast.bound <= brute + slack).all()
        np.testing.assert_allclose(fast.area, brute.diagonal(), rtol=1e-6)


def test_dense_masks_fast_weights_are_exact_over_the_upper_triangle_and_select_as_brute_force():
    """Masks like an untrained head's (every query above tau on every tile): the fast weights compute
    each pair once per pixel (not twice, not padded), equal brute force, and select what it selects."""
    q = PDIST_MIN_QUERIES + 8  # tiles with more queries than that go through pdist
    logits, masks, shapes = make_dense_inputs(0, queries=q, views=2, height=64, width=96)
    shp = shapes_list(shapes)
    full = torch.stack(mask_probs(masks, shp), 1).flatten(1).double()  # [Q, all pixels]
    brute = torch.minimum(full[:, None], full[None]).sum(-1).numpy()
    probs = mask_probs_low_res(masks, shp)
    stats = soft_overlaps(probs, shp, tau=1e-3)
    assert stats.pair_pixels == q * (q - 1) // 2 * full.shape[1]  # 64x96 = 2x3 whole tiles of 32x32
    np.testing.assert_allclose(stats.overlap, brute, rtol=1e-6)
    assert np.abs(stats.bound).max() <= 1e-9 * brute.max()  # every pair exact on every tile
    twin = soft_overlaps(probs, shp, tau=1e-3, kernel="cdist")  # the former kernel
    np.testing.assert_allclose(stats.overlap, twin.overlap, rtol=1e-12)
    exact = soft_overlaps(probs, shp, tau=0.0)
    assert exact.pair_pixels == stats.pair_pixels
    np.testing.assert_allclose(exact.overlap, brute, rtol=1e-9)
    reference = OverlapStats(brute.diagonal().copy(), brute, np.zeros_like(brute))
    expected = np.flatnonzero(solve_qubo(qubo_matrix(reference, qubo_norm(shp)), seed=0))
    result = postprocess(logits, masks, shapes, "qubo", qubo=QuboConfig(tau=1e-3))
    assert result.info["selected"] == expected.tolist() and len(expected) > 0


@pytest.mark.parametrize(
    ("small", "shape", "tile"),
    [((80, 112), (160, 224), 32), ((37, 50), (100, 77), 16), ((20, 30), (20, 30), 8), ((50, 60), (96, 128), 32)],
)
def test_tile_geometry(small, shape, tile, monkeypatch):
    p = torch.rand(4, *small, generator=torch.Generator().manual_seed(0))
    geo, full = tile_geometry(small, shape, tile), upsample(p, shape)

    def tiled(fill: float) -> torch.Tensor:  # [nt, 4, tile*tile], pixels past the view = fill
        padded = torch.nn.functional.pad(full, (0, -shape[1] % tile, 0, -shape[0] % tile), value=fill)
        nh, nw = padded.shape[1] // tile, padded.shape[2] // tile
        return padded.reshape(4, nh, tile, nw, tile).permute(1, 3, 0, 2, 4).reshape(nh * nw, 4, tile * tile)

    tiles = tiled(0.0)
    np.testing.assert_allclose(geo.sums(p).numpy(), tiles.double().sum(-1).numpy(), rtol=1e-5, atol=1e-4)
    assert (geo.window_max(p) >= tiled(-1.0).amax(-1) - 1e-6).all()
    assert (geo.window_min(p) <= tiled(2.0).amin(-1) + 1e-6).all()
    nh, nw = -(-shape[0] // tile), -(-shape[1] // tile)
    fast_max, fast_min = geo.window_max(p), geo.window_min(p)
    monkeypatch.setattr(qubo_tiles, "_core_halo_plan", lambda axis: None)  # per-window fallback
    assert torch.equal(fast_max, geo.window_max(p)) and torch.equal(fast_min, geo.window_min(p))
    t, q = torch.arange(nh * nw).repeat_interleave(4), torch.arange(4).repeat(nh * nw)
    vals = geo.tile_values(p, t, q).reshape(nh * nw, 4, -1)
    np.testing.assert_allclose(vals.numpy(), tiles.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["general", "masks"])
def test_solver_finds_the_optimum_on_small_problems(kind):
    rng = np.random.default_rng(1)
    for _ in range(40):
        a = random_qubo(rng, int(rng.integers(1, 17)), kind)
        best, _ = brute_force(a)
        assert qubo_energy(a, solve_qubo(a, seed=0)) == pytest.approx(best, abs=1e-12)
        local = solve_qubo(a, seed=0, cfg=SolverConfig(max_exact=0))  # local search only
        assert qubo_energy(a, local) == pytest.approx(best, abs=1e-12)


def test_exhaustive_and_persistency_agree_with_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(30):
        a = random_qubo(rng, int(rng.integers(1, 13)), "general" if rng.random() < 0.5 else "masks")
        d, c = split_qubo(a)
        best, energies = brute_force(a)
        x = exhaustive(d, c)
        assert qubo_energy(a, x) == pytest.approx(best, abs=1e-12)
        fixed = persistency(d, c)
        optima = np.flatnonzero(energies <= best + 1e-12)
        for code in optima:  # every optimum respects every fixed variable
            bits = (code >> np.arange(len(a))) & 1
            assert ((fixed < 0) | (bits == fixed)).all()


def test_solver_not_worse_than_annealer_on_larger_problems():
    rng = np.random.default_rng(3)
    for kind in ("general", "masks"):
        a = random_qubo(rng, 60, kind)
        assert qubo_energy(a, solve_qubo(a, seed=0)) <= anneal_reference(a, seed=0)[1] + 1e-12


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    a = random_qubo(rng, 80, "masks")
    np.testing.assert_array_equal(solve_qubo(a, seed=5), solve_qubo(a, seed=5))
    logits = rng.normal(size=(30, 4)).astype(np.float32)
    views = [rng.normal(size=(30, 10, 12)).astype(np.float32) * 5 for _ in range(2)]
    runs = [postprocess(logits, views, [[20, 24], [20, 24]], "qubo", seed=7) for _ in range(2)]
    assert runs[0].segments == runs[1].segments
    for x, y in zip(runs[0].pan + runs[0].conf, runs[1].pan + runs[1].conf):
        np.testing.assert_array_equal(x, y)


def test_empty_selection_is_all_void():
    logits = np.zeros((3, 2), np.float32)
    views = [np.full((3, 6, 8), -30.0, np.float32)]  # areas ~1e-13: selecting anything costs energy
    res = postprocess(logits, views, [[12, 16]], "qubo")
    assert res.info["selected"] == [] and res.segments == []
    assert res.pan[0].shape == (12, 16) and (res.pan[0] == 0).all() and (res.conf[0] == 0).all()


def test_padding_goes_to_the_first_selected_instance():
    h, w = 8, 8
    m0 = np.full((h, w), -8.0, np.float32)
    m0[:, :4] = 8.0
    m1 = -m0
    logits = np.array([[4.0], [4.0]], np.float32)
    small, large = np.stack([m0, m1]), np.stack([m0, m1])
    res = postprocess(logits, [small, large], [[16, 12], [16, 16]], "qubo")  # view 0 padded to 16 wide
    assert res.info["selected"] == [0, 1]
    seg = {s["query"]: s for s in res.segments}
    assert seg[0]["area"] + seg[1]["area"] == 2 * 16 * 16  # padding counted, given to query 0
    assert seg[0]["area"] > seg[1]["area"]


def test_reference_annealer_rng_call_sequence(monkeypatch):
    """seed, then randint(0, 2, n) per restart, randint(n) per flip, rand() only if E does not drop."""
    calls: list[tuple] = []
    randint, rand = np.random.randint, np.random.rand

    def log_randint(*args):
        calls.append(("randint",) + args)
        return randint(*args)

    def log_rand():
        calls.append(("rand",))
        return rand()

    monkeypatch.setattr(np.random, "randint", log_randint)
    monkeypatch.setattr(np.random, "rand", log_rand)
    a = random_qubo(np.random.default_rng(5), 6, "masks")
    anneal_reference(a, seed=3, num_redo=2, num_iter=40)
    starts = [k for k, c in enumerate(calls) if c == ("randint", 0, 2, 6)]
    assert len(starts) == 2 and starts[0] == 0
    for run in (calls[starts[0] + 1 : starts[1]], calls[starts[1] + 1 :]):
        assert sum(c == ("randint", 6) for c in run) == 40
        assert all(prev == ("randint", 6) for prev, c in zip(run, run[1:]) if c == ("rand",))
