"""MUSt3R memory + render against the official pointmaps (both keyframe cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine.model.configs import panst3r_v1
from panst3r_engine.model.inference import activate_pointmaps, memory_batches, select_keyframes
from panst3r_engine.model.must3r_decoder import MUSt3RDecoder
from panst3r_engine.model.must3r_encoder import MUSt3REncoder
from tests.parity_utils import fill_module, load_case, load_parity_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def must3r():
    cfg = panst3r_v1()
    encoder, decoder = MUSt3REncoder(cfg.encoder).eval(), MUSt3RDecoder(cfg.decoder).eval()
    fill_module(encoder, "must3r_encoder.")
    fill_module(decoder, "must3r_decoder.")
    return encoder, decoder


@pytest.mark.parametrize("case", ["all_kf_v1", "partial_kf_v1"])
@torch.no_grad()
def test_memory_and_render_match_official(parity_dir, must3r, case):
    encoder, decoder = must3r
    arrays, meta = load_case(parity_dir, case)
    tokens, pos = encoder(load_parity_images(parity_dir))
    keyframes = select_keyframes(3, meta["case"]["num_keyframes"])
    assert keyframes == meta["keyframes"]
    memory, start = None, 0
    for size in memory_batches(len(keyframes)):
        batch = keyframes[start : start + size]
        memory = decoder.update([tokens[i] for i in batch], [pos[i] for i in batch], memory)
        start += size
    feats, raw = decoder.render(tokens, pos, memory)
    assert np.abs(feats[0].numpy() - arrays["must3r_dec_feats_v0"]).max() <= 1e-3
    assert np.abs(raw.numpy() - arrays["pointmaps_raw"]).max() <= 1e-3
    pts3d, _, conf = activate_pointmaps(raw)
    ref = arrays["pts3d"]
    assert (np.abs(pts3d.numpy() - ref) <= 1e-3 * np.maximum(1.0, np.abs(ref))).all()
    assert np.abs(conf.numpy() - arrays["conf"]).max() <= 1e-3
