"""Inference order and batching on a tiny random model (fast)."""

from __future__ import annotations

import pytest
import torch

from panst3r_engine.model.checkpoints import random_state_dict
from panst3r_engine.model.configs import model_config
from panst3r_engine.model.inference import BACKBONE_BATCH, memory_batches, run_inference, select_keyframes
from panst3r_engine.model.panst3r import PanSt3R


def tiny_model(version: str) -> PanSt3R:
    cfg = model_config(version, tiny=True)
    model = PanSt3R(cfg)
    model.load_state_dict(random_state_dict(cfg, seed=1))
    return model.eval()


def test_keyframes_follow_the_official_linspace():
    assert select_keyframes(10, 3) == [0, 4, 9]
    assert select_keyframes(3, 2) == [0, 2]
    assert select_keyframes(4, None) == [0, 1, 2, 3]
    assert select_keyframes(4, 9) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        select_keyframes(4, 0)


def test_memory_schedule():
    assert memory_batches(1) == [1]
    assert memory_batches(2) == [2]
    assert memory_batches(5) == [2, 1, 1, 1]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_size_does_not_change_outputs(version):
    model = tiny_model(version)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 48, 64, generator=gen) * 2 - 1 for _ in range(4)] + [
        torch.rand(3, 64, 32, generator=gen) * 2 - 1
    ]
    text = torch.nn.functional.normalize(torch.randn(3, 768, generator=gen), dim=-1)
    ref = run_inference(model, images, text, num_keyframes=3, max_batch=1)
    for max_batch in (2, 5):
        out = run_inference(model, images, text, num_keyframes=3, max_batch=max_batch)
        torch.testing.assert_close(out.pred_logits, ref.pred_logits, rtol=1e-5, atol=1e-5)
        for a, b in zip(out.pointmaps_raw + out.pred_masks, ref.pointmaps_raw + ref.pred_masks):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ref.pred_masks[4].shape == (200, 32, 16)
    assert ref.pointmaps_raw[4].shape == (64, 32, 7)


def test_non_keyframes_reuse_keyframe_queries():
    """A non-keyframe's masks are the prediction heads on the keyframes' final queries."""
    model = tiny_model("v1")
    gen = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 48, 64, generator=gen) * 2 - 1 for _ in range(3)]
    text = torch.nn.functional.normalize(torch.randn(2, 768, generator=gen), dim=-1)
    out = run_inference(model, images, text, keyframes=[0, 2], keep_features=True)
    again = model.panoptic_decoder.predict(out.out_queries, [out.features["mask_feats"][1]], text)
    torch.testing.assert_close(again["pred_masks"][0], out.pred_masks[1])


def test_bad_inputs_are_named():
    model = tiny_model("v1")
    text = torch.nn.functional.normalize(torch.randn(2, 768), dim=-1)
    with pytest.raises(ValueError, match="multiples of 16"):
        run_inference(model, [torch.zeros(3, 40, 64)], text)
    with pytest.raises(ValueError, match=r"\[C, 768\]"):
        run_inference(model, [torch.zeros(3, 48, 64)], torch.zeros(2, 512))
    with pytest.raises(ValueError, match="no images"):
        run_inference(model, [], text)


def _relative(a, b) -> float:
    """Largest |a - b| over the largest |a|, over all views."""
    a, b = torch.stack(list(a)), torch.stack(list(b))
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_amp_on_cpu_runs_the_backbones_in_bf16_within_the_stated_error(version):
    """``amp`` on CPU: bf16 autocast is applied (pointmaps move by bf16 rounding) and stays within README's bound."""
    model = tiny_model(version)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=gen) * 2 - 1 for _ in range(4)]
    text = torch.nn.functional.normalize(torch.randn(5, 768, generator=gen), dim=-1)
    ref = run_inference(model, images, text, num_keyframes=3)
    again = run_inference(model, images, text, num_keyframes=3)
    amp = run_inference(model, images, text, num_keyframes=3, amp=True)
    assert _relative(ref.pointmaps_raw, again.pointmaps_raw) == 0.0  # float32 is deterministic
    pointmaps = _relative(ref.pointmaps_raw, amp.pointmaps_raw)
    assert 2**-12 < pointmaps < 2e-2  # applied (float32 would give 0), within the stated 2 %
    assert _relative(ref.pred_masks, amp.pred_masks) < 2e-2
    assert _relative([ref.pred_logits], [amp.pred_logits]) < 2e-2
    assert all(p.dtype == torch.float32 for p in amp.pointmaps_raw + amp.pred_masks)


def test_backbones_take_several_views_per_call_whatever_max_batch():
    """The encoder and DINOv2 see up to BACKBONE_BATCH same-size views per call even with max_batch=1."""
    model = tiny_model("v1")
    sizes: dict[str, list[int]] = {"encoder": [], "dino": []}
    model.must3r_encoder.register_forward_pre_hook(lambda m, args: sizes["encoder"].append(args[0].shape[0]))
    model.dino_encoder.register_forward_pre_hook(lambda m, args: sizes["dino"].append(args[0].shape[0]))
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 48, 64, generator=gen) * 2 - 1 for _ in range(BACKBONE_BATCH + 1)]
    text = torch.nn.functional.normalize(torch.randn(2, 768, generator=gen), dim=-1)
    run_inference(model, images, text, num_keyframes=2, max_batch=1)
    assert sizes["encoder"] == [BACKBONE_BATCH, 1]
    assert sizes["dino"] == [2, BACKBONE_BATCH - 1]  # the 2 keyframes, then the other views
