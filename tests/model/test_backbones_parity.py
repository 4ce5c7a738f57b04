"""MUSt3R encoder and DINOv2 against the official outputs (view 0 of the fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine.model.configs import panst3r_v1
from panst3r_engine.model.dinov2 import DinoV2Encoder
from panst3r_engine.model.must3r_encoder import MUSt3REncoder
from tests.parity_utils import fill_module, load_case, load_parity_images

pytestmark = pytest.mark.slow


@torch.no_grad()
def test_must3r_encoder_matches_official(parity_dir):
    arrays, _ = load_case(parity_dir, "all_kf_v1")
    encoder = MUSt3REncoder(panst3r_v1().encoder).eval()
    fill_module(encoder, "must3r_encoder.")
    tokens, pos = encoder(load_parity_images(parity_dir)[:1])
    np.testing.assert_array_equal(pos[0].numpy(), arrays["must3r_enc_pos_v0"])
    diff = np.abs(tokens[0].numpy() - arrays["must3r_enc_tokens_v0"]).max()
    assert diff <= 1e-3, f"encoder tokens differ by {diff}"


@torch.no_grad()
def test_dinov2_matches_official(parity_dir):
    arrays, _ = load_case(parity_dir, "all_kf_v1")
    dino = DinoV2Encoder(panst3r_v1().dino).eval()
    fill_module(dino, "dino_encoder.")
    feats = dino(load_parity_images(parity_dir)[:1])
    diff = np.abs(feats[0].numpy() - arrays["dino_feats_v0"]).max()
    assert diff <= 1e-3, f"DINOv2 features differ by {diff}"
