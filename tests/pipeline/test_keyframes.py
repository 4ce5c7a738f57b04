"""Keyframe choice: farthest-point sampling and the retrieval ordering on hand-worked similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine.model.inference import run_inference
from panst3r_engine.pipeline.keyframes import (
    choose_keyframes,
    farthest_point_sampling,
    linspace_keyframes,
    order_keyframes,
    pooled_similarity,
    retrieval_keyframes,
)
from tests.model.test_inference import tiny_model

# Five views on a line at x = 0, 1, 2, 10, 11: distances |xi - xj|.
X = np.array([0.0, 1.0, 2.0, 10.0, 11.0])
LINE = np.abs(X[:, None] - X[None])


def test_fps_picks_the_farthest_view_each_time():
    # Seed 0 draws view 4 first (numpy's default_rng(0).integers(5) == 4); the farthest from x=11 is x=0 (view 0);
    # then the view whose nearest chosen one is farthest: x=2 (min(2, 9)) beats x=1 (1) and x=10 (1).
    first = int(np.random.default_rng(0).integers(5))
    assert first == 4
    assert farthest_point_sampling(LINE, 3, seed=0) == [4, 0, 2]
    # Then x=1 and x=10 are both 1 from their nearest pick: the tie goes to the lower index (view 1).
    assert farthest_point_sampling(LINE, 10, seed=0) == [4, 0, 2, 1, 3]  # all views, no repeats
    assert farthest_point_sampling(LINE, 0) == []


def test_order_starts_with_the_most_connected_and_grows_by_overlap():
    s = np.array([[1.0, 0.9, 0.1, 0.0], [0.9, 1.0, 0.5, 0.2], [0.1, 0.5, 1.0, 0.8], [0.0, 0.2, 0.8, 1.0]])
    # Row sums without the diagonal: 1.0, 1.6, 1.4, 1.0 -> view 1 first. Most similar to {1}: view 0 (0.9).
    # Then to {1, 0}: view 2 (0.5 via 1) beats view 3 (0.2). Then view 3.
    assert order_keyframes(s, [0, 1, 2, 3]) == [1, 0, 2, 3]
    assert order_keyframes(s, [3, 2]) == [3, 2]  # tie on row sums: the first listed anchor
    assert order_keyframes(s, [2]) == [2]


def test_retrieval_keyframes_are_deterministic_and_diverse():
    sim = 1.0 - LINE / LINE.max()
    a, b = retrieval_keyframes(sim, 2, seed=3), retrieval_keyframes(sim, 2, seed=3)
    assert a == b and len(set(a)) == 2
    # The two picks are from different clusters ({0, 1, 2} and {3, 4}): FPS never takes two near views.
    assert len({x < 3 for x in a}) == 2


def test_linspace_matches_the_official_default():
    assert linspace_keyframes(10, 3) == [0, 4, 9]
    assert linspace_keyframes(3, 3) == [0, 1, 2]


def test_pooled_similarity_is_a_cosine_matrix():
    tokens = [torch.ones(4, 3), torch.ones(6, 3) * 2, torch.tensor([[1.0, -1.0, 0.0]] * 5)]
    s = pooled_similarity(tokens)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-6)
    assert s[0, 1] == pytest.approx(1.0) and s[0, 2] == pytest.approx(0.0, abs=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="keyframe method"):
        choose_keyframes("random", [torch.ones(2, 3)] * 3, 2)


def test_inference_takes_keyframes_chosen_from_its_encoder_tokens():
    torch.manual_seed(0)
    model = tiny_model("v2")
    images = [torch.rand(3, 32, 48) * 2 - 1 for _ in range(4)]
    seen = []

    def chooser(tokens):
        seen.append(len(tokens))
        return choose_keyframes("retrieval", tokens, 2, seed=1)

    out = run_inference(
        model, images, torch.nn.functional.normalize(torch.randn(3, model.text_dim), dim=-1), keyframes=chooser
    )
    assert seen == [4] and len(out.keyframes) == 2 and len(out.pred_masks) == 4
