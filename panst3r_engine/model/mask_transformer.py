"""Mask2Former-style query decoder shared by all views of a scene.

One set of learned queries attends (masked cross-attention) to the stride-16
tokens of every keyframe at once, so one query is one instance across views.
Internally sequences are laid out (length, batch=1, dim) as ``nn.MultiheadAttention``
expects; the public methods take and return unbatched tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import panst3r_engine.model.layers.attention as attention_impl
from panst3r_engine.model.configs import MaskTransformerConfig

NORM_EPS = 1e-5
LANG_EPS = 1e-7


def sine_position_embedding(
    height: int, width: int, num_pos_feats: int, temperature: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """DETR-style normalised sine PE of an h x w grid, row-major: [h*w, 2*num_pos_feats].

    Rows/columns are numbered 1..n, divided by (n + 1e-6) and scaled by 2*pi; each half
    interleaves sin/cos of frequency pairs sharing ``temperature^(2*floor(k/2)/num_pos_feats)``.
    Channels are [row part, column part].
    """
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def encode(length: int) -> torch.Tensor:
        index = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        angle = (index / (index[-1:] + 1e-6) * (2 * math.pi))[:, None] / dim_t
        return torch.stack((angle[:, 0::2].sin(), angle[:, 1::2].cos()), dim=2).flatten(1)

    rows = encode(height)[:, None, :].expand(height, width, num_pos_feats)
    cols = encode(width)[None, :, :].expand(height, width, num_pos_feats)
    return torch.cat((rows, cols), dim=-1).reshape(height * width, 2 * num_pos_feats)


def _attend(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    blocked: torch.Tensor | None = None,
) -> torch.Tensor:
    """``nn.MultiheadAttention`` on (L, 1, D) inputs; ``blocked`` bool, True = not attended.

    ``need_weights`` selects torch's explicit-softmax path when fused attention is
    switched off (:func:`panst3r_engine.model.layers.use_fused_attention`), SDPA otherwise.
    """
    fused = attention_impl._FUSED
    return mha(query, key, value, attn_mask=blocked, need_weights=not fused)[0]


class CrossAttentionLayer(nn.Module):
    """Post-norm masked cross-attention: ``norm(q + MHA(q + qpos, mem + pos, mem))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(
        self,
        q: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        blocked: torch.Tensor | None,
    ) -> torch.Tensor:
        out = _attend(self.multihead_attn, q + query_pos, memory + pos, memory, blocked)
        return self.norm(q + out)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: ``norm(q + MHA(q + qpos, q + qpos, q))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, q: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        qk = q + query_pos
        return self.norm(q + _attend(self.self_attn, qk, qk, q))


class FFNLayer(nn.Module):
    """Post-norm ReLU feed-forward: ``norm(q + linear2(relu(linear1(q))))``."""

    def __init__(self, dim: int, ff_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.norm(q + self.linear2(F.relu(self.linear1(q))))


class MaskEmbed(nn.Module):
    """3-layer MLP (ReLU between layers) from query state to mask-embedding space."""

    def __init__(self, dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        widths = [dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def unblock_empty_rows(blocked: torch.Tensor) -> torch.Tensor:
    """Rows (queries) that would block every key attend everywhere instead (avoids NaN)."""
    return blocked & ~blocked.all(dim=-1, keepdim=True)


class MaskTransformer(nn.Module):
    """Queries -> class logits (open vocabulary, cosine) and per-view mask logits.

    Args:
        cfg: widths, number of queries / heads / layers, mask and text-embedding widths.
    """

    def __init__(self, cfg: MaskTransformerConfig) -> None:
        super().__init__()
        dim = cfg.hidden_dim
        self.num_heads = cfg.num_heads
        self.cls_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.self_attn_layers = nn.ModuleList(SelfAttentionLayer(dim, cfg.num_heads) for _ in range(cfg.depth))
        self.cross_attn_layers = nn.ModuleList(CrossAttentionLayer(dim, cfg.num_heads) for _ in range(cfg.depth))
        self.ffn_layers = nn.ModuleList(FFNLayer(dim, cfg.ff_dim) for _ in range(cfg.depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.query_feat = nn.Embedding(cfg.num_queries, dim)
        self.query_embed = nn.Embedding(cfg.num_queries, dim)
        self.level_embed = nn.Embedding(1, dim)
        self.lang_embed = nn.Linear(dim, cfg.lang_dim)
        self.mask_embed = MaskEmbed(dim, cfg.mask_dim)

    def memory(self, fpn: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-view maps [D, h_v, w_v] -> keys/values src and sine PE, both [sum h_v w_v, 1, D].

        Tokens are view-major then row-major; each view's PE is computed on its own grid.
        """
        srcs, poses = [], []
        for feature_map in fpn:
            dim, height, width = feature_map.shape
            srcs.append(feature_map.flatten(1).transpose(0, 1) + self.level_embed.weight[0])
            poses.append(sine_position_embedding(height, width, dim // 2, device=feature_map.device))
        return torch.cat(srcs).unsqueeze(1), torch.cat(poses).unsqueeze(1)

    def predict(self, queries: torch.Tensor, mask_feats: list[torch.Tensor], class_embeddings: torch.Tensor) -> dict:
        """Prediction heads on query states [Q, D] (pre-``decoder_norm``).

        mask_feats: per view [mask_dim, H_v/2, W_v/2]; class_embeddings [C, lang_dim], unit norm.
        Returns ``pred_logits`` [Q, C] and ``pred_masks`` (list per view of [Q, H_v/2, W_v/2]).
        """
        normed = self.decoder_norm(queries)
        lang = self.lang_embed(normed)
        lang = lang / (lang.norm(dim=-1, keepdim=True) + LANG_EPS)
        logits = self.cls_logit_scale.exp() * (lang @ class_embeddings.transpose(0, 1))
        embedding = self.mask_embed(normed)
        masks = [torch.einsum("qc,chw->qhw", embedding, feats) for feats in mask_feats]
        return {"pred_logits": logits, "pred_masks": masks}

    def view_masks(self, queries: torch.Tensor, mask_feats: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The ``pred_masks`` of :meth:`predict` (same values), made one view at a time as they are read, so
        the full-resolution logits of many views never exist together."""
        embedding = self.mask_embed(self.decoder_norm(queries))
        return (torch.einsum("qc,chw->qhw", embedding, feats) for feats in mask_feats)

    def attention_mask(
        self, masks: Iterable[torch.Tensor], sizes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits -> blocked [heads, Q, K] (True where sigmoid < 0.5 at the key's fpn cell).

        Each view's logits are resized (bilinear) to its fpn grid, flattened and concatenated
        in key order. Fully blocked rows are NOT yet unblocked here. Also returns each
        query's margin [Q]: the smallest |logit| among its keys, i.e. how close the mask
        came to flipping an attention decision (rounding noise can flip a near-zero one).
        """
        parts = [
            F.interpolate(m.detach()[None], size=size, mode="bilinear", align_corners=False)[0].flatten(1)
            for m, size in zip(masks, sizes)
        ]
        logits = torch.cat(parts, dim=1)
        blocked = logits.sigmoid() < 0.5
        return blocked.unsqueeze(0).expand(self.num_heads, -1, -1), logits.abs().amin(dim=1)

    def forward(
        self,
        fpn: list[torch.Tensor],
        mask_feats: list[torch.Tensor],
        class_embeddings: torch.Tensor,
        aux_outputs: bool = False,
        masks: bool = True,
    ) -> dict:
        """Joint decoding of all given views (see :meth:`predict` for shapes).

        fpn: per view [D, h_v, w_v]. Adds ``out_queries`` [Q, D], the final query states
        before ``decoder_norm`` (what non-keyframes are predicted from), and
        ``attention_margin`` [Q], the smallest attention-mask margin over all layers.
        ``aux_outputs``: also return the predictions before each layer (the initial queries,
        then layers 1..depth-1) under ``aux_outputs``, for deep supervision in training.
        ``masks=False`` leaves the final ``pred_masks`` out: the caller makes them view by view with
        :meth:`predict` on ``out_queries`` (same values), so no more than one view's full-resolution
        logits exist at a time (each layer's attention masks are made view by view in any case).
        """
        src, pos = self.memory(fpn)
        sizes = [tuple(f.shape[-2:]) for f in fpn]
        q = self.query_feat.weight.unsqueeze(1)
        query_pos = self.query_embed.weight.unsqueeze(1)
        margin = torch.full((q.shape[0],), float("inf"), device=q.device)
        aux = []
        for cross, self_attn, ffn in zip(self.cross_attn_layers, self.self_attn_layers, self.ffn_layers):
            if aux_outputs:
                aux.append(self.predict(q[:, 0], mask_feats, class_embeddings))
            view_masks = aux[-1]["pred_masks"] if aux_outputs else self.view_masks(q[:, 0], mask_feats)
            blocked, layer_margin = self.attention_mask(view_masks, sizes)
            blocked, margin = unblock_empty_rows(blocked), torch.minimum(margin, layer_margin)
            q = cross(q, src, pos, query_pos, blocked)
            q = ffn(self_attn(q, query_pos))
        pred = self.predict(q[:, 0], mask_feats if masks else [], class_embeddings)
        if not masks:
            del pred["pred_masks"]
        out = {**pred, "out_queries": q[:, 0], "attention_margin": margin}
        return {**out, "aux_outputs": aux} if aux_outputs else out
