"""MaskTransformer unit tests on a tiny config (the joint decode needs all views' backbone
features, so fixture parity for it lives in the full-network test)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from panst3r_engine.model.configs import panst3r_v1
from panst3r_engine.model.layers import use_fused_attention
from panst3r_engine.model.mask_transformer import (
    CrossAttentionLayer,
    MaskTransformer,
    sine_position_embedding,
    unblock_empty_rows,
)

CFG = panst3r_v1(tiny=True).panoptic.mask_transformer  # hidden 64, 4 heads, 2 layers, mask_dim 32
SIZES = [(4, 6), (3, 5)]  # two views of different sizes (fpn grid); mask maps are 8x larger


def _model(seed: int = 0) -> MaskTransformer:
    torch.manual_seed(seed)
    return MaskTransformer(CFG).eval()


def _inputs(seed: int = 1, num_classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    fpn = [torch.randn(CFG.hidden_dim, h, w, generator=gen) for h, w in SIZES]
    feats = [torch.randn(CFG.mask_dim, 8 * h, 8 * w, generator=gen) for h, w in SIZES]
    emb = F.normalize(torch.randn(num_classes, CFG.lang_dim, generator=gen), dim=-1)
    return fpn, feats, emb


# --------------------------------------------------------------------------- reference pieces
def _ref_pe(height: int, width: int, dim: int) -> torch.Tensor:
    """The spec's sine PE written element by element, float64."""
    half = dim // 2
    out = torch.zeros(height, width, dim, dtype=torch.float64)
    for k in range(half):
        freq = 10000.0 ** (2 * (k // 2) / half)
        fn = math.sin if k % 2 == 0 else math.cos
        for r in range(height):
            for c in range(width):
                out[r, c, k] = fn((r + 1) / (height + 1e-6) * 2 * math.pi / freq)
                out[r, c, half + k] = fn((c + 1) / (width + 1e-6) * 2 * math.pi / freq)
    return out.reshape(height * width, dim)


def _ref_mha(mha: torch.nn.MultiheadAttention, xq, xk, xv, allowed) -> torch.Tensor:
    """Explicit multi-head attention from the raw weights; ``allowed`` [Q, K] bool."""
    heads, dim = mha.num_heads, xq.shape[-1]
    w, b = mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
    q, k, v = (
        (x @ wi.T + bi).reshape(-1, heads, dim // heads).transpose(0, 1) for x, wi, bi in zip((xq, xk, xv), w, b)
    )
    scores = (q @ k.transpose(1, 2)) / math.sqrt(dim // heads)
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return out.transpose(0, 1).reshape(-1, dim) @ mha.out_proj.weight.T + mha.out_proj.bias


def _ref_heads(mt: MaskTransformer, q, feats, emb):
    u = F.layer_norm(q, q.shape[-1:], mt.decoder_norm.weight, mt.decoder_norm.bias, 1e-5)
    lang = mt.lang_embed(u)
    cos = (lang / (lang.norm(dim=-1, keepdim=True) + 1e-7)) @ emb.T
    logits = torch.exp(mt.cls_logit_scale) * cos
    e = u
    for i, layer in enumerate(mt.mask_embed.layers):
        e = layer(e) if i == 2 else torch.relu(layer(e))
    masks = [(e @ f.flatten(1)).reshape(-1, *f.shape[1:]) for f in feats]
    return logits, masks


def _ref_decode(mt: MaskTransformer, fpn, feats, emb):
    """Independent re-statement of the decode loop (Mask2Former, arXiv 2112.01527) with explicit attention."""
    src = torch.cat([f.flatten(1).T for f in fpn]) + mt.level_embed.weight[0]
    pos = torch.cat([_ref_pe(f.shape[1], f.shape[2], f.shape[0]).float() for f in fpn])
    q, qpos = mt.query_feat.weight, mt.query_embed.weight
    logits, masks = _ref_heads(mt, q, feats, emb)
    for ca, sa, ffn in zip(mt.cross_attn_layers, mt.self_attn_layers, mt.ffn_layers):
        allowed = torch.cat(
            [
                F.interpolate(m[None], size=f.shape[-2:], mode="bilinear")[0].sigmoid().flatten(1) >= 0.5
                for m, f in zip(masks, fpn)
            ],
            dim=1,
        )
        allowed[~allowed.any(-1)] = True
        q = ca.norm(q + _ref_mha(ca.multihead_attn, q + qpos, src + pos, src, allowed))
        everything = torch.ones(q.shape[0], q.shape[0], dtype=torch.bool)
        q = sa.norm(q + _ref_mha(sa.self_attn, q + qpos, q + qpos, q, everything))
        q = ffn.norm(q + ffn.linear2(torch.relu(ffn.linear1(q))))
        logits, masks = _ref_heads(mt, q, feats, emb)
    return logits, masks, q


# --------------------------------------------------------------------------- tests
def test_state_dict_names_and_scalar_scale():
    sd = _model().state_dict()
    assert sd["cls_logit_scale"].shape == torch.Size([])
    assert "cross_attn_layers.0.multihead_attn.in_proj_weight" in sd
    assert "self_attn_layers.1.self_attn.out_proj.bias" in sd
    assert sd["mask_embed.layers.2.weight"].shape == (CFG.mask_dim, CFG.hidden_dim)
    assert sd["level_embed.weight"].shape == (1, CFG.hidden_dim)


def test_sine_position_embedding_matches_formula():
    for h, w in [(3, 5), (10, 14)]:
        pe = sine_position_embedding(h, w, 32)
        assert pe.shape == (h * w, 64) and pe.dtype == torch.float32
        torch.testing.assert_close(pe.double(), _ref_pe(h, w, 64), atol=1e-5, rtol=0)


def test_decode_shapes_and_finite():
    mt = _model()
    fpn, feats, emb = _inputs()
    with torch.no_grad():
        out = mt(fpn, feats, emb)
    assert out["pred_logits"].shape == (CFG.num_queries, 3)
    assert [tuple(m.shape) for m in out["pred_masks"]] == [(CFG.num_queries, 8 * h, 8 * w) for h, w in SIZES]
    assert out["out_queries"].shape == (CFG.num_queries, CFG.hidden_dim)
    assert all(torch.isfinite(t).all() for t in [out["pred_logits"], out["out_queries"], *out["pred_masks"]])


@pytest.mark.parametrize("fused", [True, False])
def test_decode_matches_reference_loop(fused: bool):
    mt = _model()
    fpn, feats, emb = _inputs()
    use_fused_attention(fused)
    try:
        with torch.no_grad():
            out = mt(fpn, feats, emb)
            logits, masks, q = _ref_decode(mt, fpn, feats, emb)
    finally:
        use_fused_attention(True)
    torch.testing.assert_close(out["out_queries"], q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pred_logits"], logits, atol=1e-5, rtol=1e-5)
    for ours, ref in zip(out["pred_masks"], masks):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)


def test_masking_is_partial_in_the_reference_setting():
    """Guard for the test above: the random setting really blocks some, not all, keys."""
    mt = _model()
    fpn, feats, emb = _inputs()
    with torch.no_grad():
        masks = mt.predict(mt.query_feat.weight, feats, emb)["pred_masks"]
        blocked, _ = mt.attention_mask(masks, SIZES)
    assert blocked.shape == (CFG.num_heads, CFG.num_queries, sum(h * w for h, w in SIZES))
    assert 0.1 < blocked.float().mean() < 0.9


def test_fused_and_explicit_attention_agree():
    mt = _model()
    fpn, feats, emb = _inputs()
    with torch.no_grad():
        fused = mt(fpn, feats, emb)
        use_fused_attention(False)
        try:
            explicit = mt(fpn, feats, emb)
        finally:
            use_fused_attention(True)
    torch.testing.assert_close(fused["out_queries"], explicit["out_queries"], atol=1e-5, rtol=1e-5)
    for a, b in zip(fused["pred_masks"], explicit["pred_masks"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_attention_mask_resizes_per_view_in_key_order():
    mt = _model()
    masks = [torch.randn(CFG.num_queries, 8 * h, 8 * w) for h, w in SIZES]
    blocked, margin = mt.attention_mask(masks, SIZES)
    smalls = [
        F.interpolate(m[None], size=s, mode="bilinear", align_corners=False)[0].flatten(1) for m, s in zip(masks, SIZES)
    ]
    torch.testing.assert_close(margin, torch.cat(smalls, 1).abs().amin(1))
    for head in range(CFG.num_heads):
        start = 0
        for m, (h, w) in zip(masks, SIZES):
            small = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            assert torch.equal(blocked[head, :, start : start + h * w], small.flatten(1).sigmoid() < 0.5)
            start += h * w


def test_unblock_empty_rows():
    blocked = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    expected = torch.tensor([[False, False, False], [True, False, True], [False, False, False]])
    assert torch.equal(unblock_empty_rows(blocked), expected)
    assert torch.equal(unblock_empty_rows(blocked[None].expand(2, -1, -1)), expected[None].expand(2, -1, -1))


def test_blocked_key_has_no_influence():
    layer = CrossAttentionLayer(CFG.hidden_dim, CFG.num_heads).eval()
    q, qpos = torch.randn(5, 1, CFG.hidden_dim), torch.randn(5, 1, CFG.hidden_dim)
    mem, pos = torch.randn(7, 1, CFG.hidden_dim), torch.randn(7, 1, CFG.hidden_dim)
    blocked = torch.zeros(CFG.num_heads, 5, 7, dtype=torch.bool)
    blocked[:, :, 3] = True
    changed = mem.clone()
    changed[3] += 10.0
    with torch.no_grad():
        base = layer(q, mem, pos, qpos, blocked)
        torch.testing.assert_close(layer(q, changed, pos, qpos, blocked), base, atol=1e-6, rtol=0)
        assert not torch.allclose(layer(q, changed, pos, qpos, None), layer(q, mem, pos, qpos, None), atol=1e-3)


def _constant_mask_embedding(mt: MaskTransformer) -> None:
    """Make every query's mask embedding all-ones: mask logit = sum of the mask feature channels."""
    last = mt.mask_embed.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)


def test_blocked_view_does_not_influence_queries():
    """View 1 has negative mask logits everywhere for every query, so its tokens are never attended."""
    mt = _model()
    _constant_mask_embedding(mt)
    fpn, feats, emb = _inputs()
    feats = [torch.ones_like(feats[0]), -torch.ones_like(feats[1])]
    changed = [fpn[0], fpn[1] + 5.0 * torch.randn_like(fpn[1])]
    with torch.no_grad():
        base = mt(fpn, feats, emb)["out_queries"]
        torch.testing.assert_close(mt(changed, feats, emb)["out_queries"], base, atol=1e-6, rtol=0)
        visible = [torch.ones_like(f) for f in feats]  # control: unblocked view 1 does matter
        assert not torch.allclose(mt(changed, visible, emb)["out_queries"], mt(fpn, visible, emb)["out_queries"])


def test_fully_blocked_rows_attend_everywhere():
    mt = _model()
    _constant_mask_embedding(mt)
    fpn, feats, emb = _inputs()
    with torch.no_grad():
        blocked_all = mt(fpn, [-torch.ones_like(f) for f in feats], emb)["out_queries"]
        open_all = mt(fpn, [torch.ones_like(f) for f in feats], emb)["out_queries"]
    assert torch.isfinite(blocked_all).all()
    torch.testing.assert_close(blocked_all, open_all, atol=1e-6, rtol=0)


def test_predict_on_out_queries_reproduces_decode():
    mt = _model()
    fpn, feats, emb = _inputs()
    with torch.no_grad():
        out = mt(fpn, feats, emb)
        again = mt.predict(out["out_queries"], feats, emb)
        single = mt.predict(out["out_queries"], feats[1:], emb)
    assert torch.equal(again["pred_logits"], out["pred_logits"])
    for a, b in zip(again["pred_masks"], out["pred_masks"]):
        assert torch.equal(a, b)
    assert torch.equal(single["pred_masks"][0], out["pred_masks"][1])


def test_class_logits_by_hand():
    mt = _model()
    with torch.no_grad():
        mt.cls_logit_scale.fill_(0.7)
    q = torch.randn(CFG.num_queries, CFG.hidden_dim)
    _, _, emb = _inputs(num_classes=4)
    with torch.no_grad():
        logits = mt.predict(q, [], emb)["pred_logits"]
        lang = mt.lang_embed(F.layer_norm(q, (CFG.hidden_dim,), mt.decoder_norm.weight, mt.decoder_norm.bias, 1e-5))
        expected = math.exp(0.7) * F.cosine_similarity(lang[:, None, :], emb[None, :, :], dim=-1)
    assert logits.shape == (CFG.num_queries, 4)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-5)
