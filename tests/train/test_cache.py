"""The frozen-feature cache: keyed by pixels and frozen weights, equal to a fresh computation."""

from __future__ import annotations

import torch

from panst3r_engine.model.checkpoints import load_model
from panst3r_engine.train.cache import FeatureCache, backbone_fingerprint, compute_features, sample_key


def test_cache_hits_on_the_same_sample_and_matches_a_fresh_computation(tiny_v2, tmp_path) -> None:
    model, _ = load_model(tiny_v2)
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    cache = FeatureCache(tmp_path / "cache", model)
    first = cache.get(images)
    assert (cache.misses, cache.hits) == (1, 0)
    again = FeatureCache(tmp_path / "cache", model).get(images)  # a later run: read from disk
    fresh = compute_features(model, images)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.tokens, fresh.tokens)
    assert first.tokens.shape == (2, 6, model.cfg.concat_dim) and first.pos.shape == (2, 6, 2)
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_key_changes_with_pixels_and_frozen_weights_but_not_the_decoder(tiny_v2) -> None:
    model, _ = load_model(tiny_v2)
    images = torch.zeros(1, 3, 32, 32)
    base = backbone_fingerprint(model)
    assert sample_key(images, base) != sample_key(images + 0.01, base)
    with torch.no_grad():
        model.panoptic_decoder.mask_transformer.query_feat.weight.add_(1.0)
        assert backbone_fingerprint(model) == base
        model.dino_encoder.dinov2.layernorm.bias.add_(1.0)
        assert backbone_fingerprint(model) != base


def test_a_damaged_entry_is_recomputed(tiny_v2, tmp_path) -> None:
    model, _ = load_model(tiny_v2)
    images = torch.zeros(1, 3, 32, 32)
    cache = FeatureCache(tmp_path, model)
    cache.path(images).write_bytes(b"not a torch file")
    assert cache.get(images).tokens.shape[0] == 1 and cache.misses == 1
