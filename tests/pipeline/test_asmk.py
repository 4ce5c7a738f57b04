"""ASMK* similarity (Tolias et al., ICCV 2013) on hand-worked examples, and the fast path against its twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panst3r_engine.pipeline.asmk import AsmkParams, _asmk_similarity, asmk_similarity, selectivity

ONE_WORD = AsmkParams(query_assignment=1)  # both sides one word per descriptor: a symmetric matrix


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_selectivity_is_a_thresholded_power():
    u = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(selectivity(u, 3.0, 0.0), [0, 0, 0, 0.125, 1])
    np.testing.assert_allclose(selectivity(u, 1.0, -0.6), [0, -0.5, 0, 0.5, 1])


def test_hand_worked_binary_kernel():
    # Two words in 4-D: c0 at the origin, c1 at (10, 10, 10, 10); residual = descriptor - its word.
    codebook = t([0, 0, 0, 0], [10, 10, 10, 10])
    a = t([1, 2, -1, -1], [1, -1, 2, -1])  # both on c0: residual sum (2, 1, 1, -2) -> signs + + + -
    b = t([1, 1, 1, 1], [11, 11, 11, 9])  # c0: + + + +;  c1: residual (1, 1, 1, -1) -> + + + -
    c = t([-1, -1, -1, 1], [11, 9, 11, 9])  # c0: - - - +;  c1: residual (1, -1, 1, -1) -> + - + -
    s = asmk_similarity([a, b, c], codebook, ONE_WORD)
    # u = <b_X, b_Y> / 4 per shared word; sigma(u) = u^3 for u > 0. Words per image: a 1, b 2, c 2.
    # a-b: c0 u = (1+1+1-1)/4 = 0.5 -> 0.125, normalised by sqrt(1 * 2).
    # a-c: c0 u = -1 -> 0.   b-c: c0 u = -0.5 -> 0; c1 u = (1-1+1+1)/4 = 0.5 -> 0.125, over sqrt(2 * 2).
    expected = np.array(
        [
            [1.0, 0.125 / math.sqrt(2), 0.0],
            [0.125 / math.sqrt(2), 1.0, 0.125 / 2],
            [0.0, 0.125 / 2, 1.0],
        ]
    )
    np.testing.assert_allclose(s, expected, atol=1e-12)


def test_hand_worked_multiple_assignment_on_the_query_side():
    # 2-D, words c0 = (0, 0) and c1 = (4, 0). p = (1, 1) is nearest c0, q = (3, 1) nearest c1.
    codebook = t([0, 0], [4, 0])
    p, q = t([1, 1]), t([3, 1])
    # One word each side: p and q share no word.
    np.testing.assert_allclose(asmk_similarity([p, q], codebook, ONE_WORD), [[1, 0], [0, 1]])
    # Queries take 5 words (here both): p -> c0 (1, 1) ++ and c1 (-3, 1) -+; q -> c1 (-1, 1) -+ and c0 (3, 1) ++.
    # The database keeps one: p {c0: ++}, q {c1: -+}. Every query matches every image on one word with u = 1,
    # normalised by sqrt(2 query words * 1 database word).
    np.testing.assert_allclose(asmk_similarity([p, q], codebook), np.full((2, 2), 1 / math.sqrt(2)))


def test_zero_residual_bits_are_negative_and_threshold_excludes_orthogonal_words():
    # A residual component of exactly 0 is a 0 bit (-1), as a packed sign test "> 0" makes it.
    codebook = t([0, 0])
    x, y = t([1, 0]), t([1, 1])  # signs + -  and  + +: u = 0, not above the threshold 0
    np.testing.assert_allclose(asmk_similarity([x, y], codebook), np.eye(2))


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_matches_the_reference_twin(seed):
    g = torch.Generator().manual_seed(seed)
    descriptors = [torch.nn.functional.normalize(torch.randn(n, 24, generator=g), dim=-1) for n in (6, 11, 3, 9, 1)]
    codebook = torch.nn.functional.normalize(torch.randn(12, 24, generator=g), dim=-1)
    for params in (AsmkParams(), ONE_WORD, AsmkParams(alpha=1.0, threshold=-0.2, query_assignment=3)):
        np.testing.assert_allclose(
            asmk_similarity(descriptors, codebook, params), _asmk_similarity(descriptors, codebook, params), atol=1e-9
        )
