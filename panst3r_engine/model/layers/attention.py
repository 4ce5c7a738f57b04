"""Multi-head attention through ``scaled_dot_product_attention``.

An explicit-softmax twin is kept beside the fused path (switch with
:func:`use_fused_attention` or ``PANST3R_FUSED_ATTN=0``) so tests can compare both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panst3r_engine.config import fused_attention_default

_FUSED = fused_attention_default()


def use_fused_attention(enabled: bool) -> None:
    """Select SDPA (True, default) or the explicit softmax reference (False)."""
    global _FUSED
    _FUSED = bool(enabled)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of q [B, h, Nq, d] over k, v [B, h, Nk, d].

    ``mask`` is boolean, True where attention is allowed (SDPA semantics).
    """
    if _FUSED:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Self-attention with a fused ``qkv`` projection and optional 2D RoPE.

    Args:
        dim: token width.
        num_heads: number of heads (``dim`` must divide evenly).
        qkv_bias: whether the fused projection has a bias.
        rope: rotary embedding applied to q and k, or None.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, rope: nn.Module | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.rope is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CrossAttention(nn.Module):
    """Cross-attention with separate ``projq/projk/projv`` and an output ``proj``.

    Args:
        dim: token width (queries and keys).
        num_heads: number of heads.
        qkv_bias: whether q/k/v projections have biases (the output one always has).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """query [B, Nq, dim], key/value [B, Nk, dim] -> [B, Nq, dim]."""
        return self.forward_projected(query, self.projk(key), self.projv(value))

    def forward_projected(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Same as ``forward`` with key/value already through ``projk``/``projv``.

        Lets a caller project a frozen memory once and reuse it for many queries.
        """
        batch, tokens, dim = query.shape
        out = attend(self._heads(self.projq(query)), self._heads(key), self._heads(value))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
