"""Keyframe choice: farthest-point sampling and the retrieval ordering on hand-worked similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from panst3r_engine.config import ENV_HOME
from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.inference import run_inference
from panst3r_engine.model.retrieval import RetrievalError, codebook_path, load_retrieval, write_random_retrieval
from panst3r_engine.pipeline.keyframes import (
    KeyframeChooser,
    choose_keyframes,
    farthest_point_sampling,
    linspace_keyframes,
    order_keyframes,
    pooled_similarity,
    retrieval_keyframes,
    retrieval_similarity,
)
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.run import run_job
from panst3r_engine.weights.registry import RETRIEVAL_ID, weights_path
from tests.model.test_inference import tiny_model
from tests.pipeline.conftest import textured

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


# --- MUSt3R's retrieval head -------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights cache for this test."""
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "home"))
    return tmp_path / "home"


def _clustered_tokens(seed: int = 0, views: int = 8, dim: int = 64) -> list[torch.Tensor]:
    """Views of two "places": tokens around one of two random centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, 20, dim, generator=g)
    return [centres[v % 2] + 0.3 * torch.randn(20, dim, generator=g) for v in range(views)]


def test_the_head_chooses_deterministic_keyframes_and_says_so(tmp_path, cache):
    retrieval = load_retrieval(write_random_retrieval(tmp_path / "r_trainingfree.pth", nclusters=32))
    tokens = _clustered_tokens()
    chooser = KeyframeChooser("retrieval", 2, seed=4, retrieval=retrieval)
    picked = chooser(tokens)
    assert picked == KeyframeChooser("retrieval", 2, seed=4, retrieval=retrieval)(tokens)
    assert chooser.used == {"keyframes_by": "retrieval", "keyframes_similarity": "must3r"} and not chooser.warnings
    assert {v % 2 for v in picked} == {0, 1}  # one keyframe per place: FPS on 1 - S went across
    s = retrieval_similarity(retrieval, tokens)
    assert s.shape == (8, 8) and picked == retrieval_keyframes(s, 2, seed=4)
    assert choose_keyframes("auto", tokens, 2, seed=4, retrieval=retrieval) == picked


def test_without_the_head_retrieval_is_training_free_and_auto_is_linspace(cache):
    tokens = _clustered_tokens()
    chooser = KeyframeChooser.for_job("retrieval", 3, seed=1)
    assert chooser.retrieval is None and chooser(tokens) == retrieval_keyframes(pooled_similarity(tokens), 3, 1)
    assert chooser.used == {"keyframes_by": "retrieval", "keyframes_similarity": "training-free"}
    assert (
        "training-free similarity" in chooser.warnings[0]
        and "weights download must3r-retrieval-512" in (chooser.warnings[0])
    )
    auto = KeyframeChooser.for_job("auto", 3)
    assert auto(tokens) == linspace_keyframes(8, 3) and auto.used["keyframes_by"] == "linspace"
    assert not auto.warnings


def test_the_cache_head_is_found_and_a_broken_one_is_skipped_with_a_warning(cache):
    path = write_random_retrieval(weights_path(RETRIEVAL_ID), nclusters=32)
    assert codebook_path(path) == weights_path(RETRIEVAL_ID + "-codebook")  # the registry puts them together
    tokens = _clustered_tokens()
    auto = KeyframeChooser.for_job("auto", 2, seed=4)
    assert auto.retrieval is not None and auto(tokens) == KeyframeChooser("retrieval", 2, 4, auto.retrieval)(tokens)
    assert auto.used["keyframes_similarity"] == "must3r"
    # A head for another encoder width: skipped with a warning (auto -> linspace), but an error when named.
    narrow = KeyframeChooser.for_job("auto", 2)
    assert narrow(_clustered_tokens(dim=32)) == [0, 7] and narrow.used["keyframes_by"] == "linspace"
    assert "retrieval head was not used" in narrow.warnings[0] and "64-d" in narrow.warnings[0]
    with pytest.raises(RetrievalError, match="takes 64-d encoder tokens but this model's have 32"):
        KeyframeChooser.for_job("auto", 2, retrieval_path=str(path))(_clustered_tokens(dim=32))
    codebook_path(path).write_bytes(b"\x80\x04not a pickle")
    broken = KeyframeChooser.for_job("retrieval", 2)
    assert broken.retrieval is None and "could not be used" in broken.warnings[0]
    broken(tokens)
    assert broken.used["keyframes_similarity"] == "training-free"
    with pytest.raises(PanSt3RError, match="truncated or corrupt"):
        KeyframeChooser.for_job("retrieval", 2, retrieval_path=str(path))


def test_a_job_with_retrieval_keyframes_uses_the_head_and_records_it(tiny_checkpoint, tmp_path, cache):
    photos = []
    for i in range(5):
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray(textured(64, 48, 40 + i % 2)).save(photos[-1])  # two "places", alternating
    head = write_random_retrieval(tmp_path / "heads" / "tiny_retrieval_trainingfree.pth", in_dim=64, nclusters=32)
    opts = JobOptions(
        weights=str(tiny_checkpoint),
        vocab_embeddings="random",
        device="cpu",
        resize="none",
        keyframes=2,
        keyframes_by="retrieval",
        retrieval=str(head),
        seed=3,
    )
    first = run_job(photos, tmp_path / "a", opts)
    options = first.manifest["options"]
    assert (options["keyframes_by"], options["keyframes_similarity"]) == ("retrieval", "must3r")
    assert not any("keyframes" in w for w in first.warnings)
    assert {i % 2 for i in options["keyframes_used"]} == {0, 1}  # both places among the keyframes


def _shuffled_walk(seed: int, views: int = 37, width: int = 20, step: int = 5, points: int = 200):
    """A walk along a loop of ``points`` scene points, each view seeing ``width`` of them (tokens: their
    features plus noise), neighbours overlapping by 75 %; the views come in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(points, 64, generator=g)
    seen = [np.arange(v * step, v * step + width) % points for v in range(views)]
    order = torch.randperm(views, generator=g).tolist()
    tokens = [features[seen[v]] + 0.1 * torch.randn(width, 64, generator=g) for v in order]
    return tokens, [seen[v] for v in order]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_keyframes_cover_a_shuffled_walk_better_than_linspace(tmp_path, seed):
    head = load_retrieval(write_random_retrieval(tmp_path / "w_trainingfree.pth", hdims=(64,), nclusters=64, nfeat=20))
    tokens, seen = _shuffled_walk(seed)

    def coverage(keyframes):
        return len(set(np.concatenate([seen[i] for i in keyframes]).tolist())) / 200

    evenly = coverage(linspace_keyframes(len(tokens), 6))
    # 6 keyframes of 20 points cover at most 120 of 200: 0.6 when no two overlap.
    for retrieval in (None, head):
        covered = coverage(KeyframeChooser("retrieval", 6, seed, retrieval)(tokens))
        assert covered >= 0.575 and covered > evenly, (retrieval is not None, covered, evenly)
