"""Unit tests of the upscaler pieces (fixture parity is in test_panoptic_decoder.py)."""

from __future__ import annotations

import math

import torch

from panst3r_engine.model.configs import panst3r_v1, panst3r_v2
from panst3r_engine.model.input_mixer import InputMixer
from panst3r_engine.model.loftup import ImplicitFeaturizer, LoftUpUpscaler, MinMaxScale
from panst3r_engine.model.upscalers import PixelShuffleUpscaler, map_to_tokens, tokens_to_map


def test_token_map_round_trip_is_row_major():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    fmap = tokens_to_map(tokens, 2, 3)
    assert fmap.shape == (2, 3, 2, 3)
    assert torch.equal(fmap[1, :, 1, 2], tokens[1, 5])  # token 5 = row 1, col 2
    assert torch.equal(map_to_tokens(fmap), tokens)


def test_pixel_shuffle_shapes():
    cfg = panst3r_v1(tiny=True).panoptic.pixel_shuffle
    up = PixelShuffleUpscaler(cfg, in_dim=40).eval()
    with torch.no_grad():
        fpn, mask = up(torch.randn(2, 12, 40), (3, 4))
    assert fpn.shape == (2, cfg.dims[0], 3, 4)
    assert mask.shape == (2, cfg.dims[3], 24, 32)


def test_min_max_scale_spans_the_batch():
    x = torch.randn(2, 3, 4, 5)
    x[1] *= 10
    out = MinMaxScale()(x)
    flat = out.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(flat.min(-1).values, torch.full((3,), -0.5))
    torch.testing.assert_close(flat.max(-1).values, torch.full((3,), 0.5))
    assert out[0].abs().max() < 0.45  # image 0 alone would span [-0.5, 0.5]


def test_min_max_scale_constant_channel_is_safe():
    out = MinMaxScale()(torch.ones(1, 3, 2, 2))
    assert torch.equal(out, torch.full((1, 3, 2, 2), -0.5))


def test_implicit_featurizer_layout():
    feat = ImplicitFeaturizer(color_feats=True, n_freqs=4)
    with torch.no_grad():
        feat.biases.copy_(torch.randn(2, 5, 4))
    img = torch.rand(1, 3, 3, 5)
    out = feat(img)
    assert feat.out_channels == 43 and out.shape == (1, 43, 3, 5)
    r, c = 2, 1
    stack = [-1 + 2 * r / 2, -1 + 2 * c / 4, *img[0, :, r, c].tolist()]  # [y, x, rgb]
    freqs = torch.exp(torch.linspace(-2, 10, 4)).tolist()
    bias_sin, bias_cos = feat.biases[0].reshape(-1), feat.biases[1].reshape(-1)  # reshape, no transpose
    for k in range(4):
        for d in range(5):
            ch = k * 5 + d
            assert math.isclose(
                out[0, ch, r, c].item(), math.sin(freqs[k] * stack[d] + bias_sin[ch].item()), abs_tol=2e-3
            )
            assert math.isclose(
                out[0, 20 + ch, r, c].item(), math.cos(freqs[k] * stack[d] + bias_cos[ch].item()), abs_tol=2e-3
            )
    assert torch.equal(out[0, 40:], img[0])


def test_implicit_featurizer_grid_only():
    feat = ImplicitFeaturizer(color_feats=False, n_freqs=5)
    out = feat(torch.randn(2, 7, 3, 4))
    assert feat.out_channels == 20 and out.shape == (2, 20, 3, 4)
    assert torch.equal(out[0], out[1])  # depends on the grid only


def test_loftup_shapes_and_batch_dependence():
    cfg = panst3r_v2(tiny=True).panoptic
    torch.manual_seed(0)
    up = LoftUpUpscaler(cfg.loftup, in_dim=24, fpn_dim=48).eval()
    tokens, images = torch.randn(2, 12, 24), torch.rand(2, 3, 48, 64) * 2 - 1
    images[0] *= 0.5  # view 0 alone has a narrower range than the batch
    with torch.no_grad():
        fpn, mask = up(tokens, (3, 4), images)
        fpn0, mask0 = up(tokens[:1], (3, 4), images[:1])
    assert fpn.shape == (2, 48, 3, 4) and mask.shape == (2, cfg.loftup.dim, 24, 32)
    torch.testing.assert_close(fpn[:1], fpn0)
    assert not torch.allclose(mask[:1], mask0, atol=1e-4)  # min-max statistics span the batch


def test_input_mixer_is_per_view_and_uses_positions():
    cfg = panst3r_v2(tiny=True).panoptic.input_mixer
    torch.manual_seed(0)
    mixer = InputMixer(cfg, in_dim=40).eval()
    tokens = torch.randn(2, 6, 40)
    pos = torch.cartesian_prod(torch.arange(2), torch.arange(3))[None].expand(2, -1, -1)
    with torch.no_grad():
        both = mixer(tokens, pos)
        first = mixer(tokens[:1], pos[:1])
        shifted = mixer(tokens[:1], pos[:1] + torch.tensor([0, 5]))
        swapped = mixer(tokens[:1], pos[:1].flip(-1))
    assert both.shape == (2, 6, cfg.dim)
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shifted, first, atol=1e-4, rtol=1e-4)  # RoPE: relative positions only
    assert not torch.allclose(swapped, first, atol=1e-3)


def test_loftup_guidance_map_is_tokens_without_a_copy():
    """The guidance convs run channels-last, so the transformer blocks read its tokens in place (speed)."""
    cfg = panst3r_v2(tiny=True).panoptic
    up = LoftUpUpscaler(cfg.loftup, in_dim=24, fpn_dim=48).eval()
    with torch.no_grad():
        hr_map = up.guidance(torch.rand(1, 3, 32, 48) * 2 - 1)
    assert hr_map.shape == (1, cfg.loftup.dim, 16, 24)
    assert map_to_tokens(hr_map).is_contiguous()
