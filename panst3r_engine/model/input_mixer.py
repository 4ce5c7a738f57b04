"""v2 InputMixer: projects the 2816-wide concat to the decoder width and mixes it per view.

A few pre-norm transformer blocks with 2D RoPE on the MUSt3R patch positions;
there is no attention across views (each view is its own batch element).
"""

from __future__ import annotations

import torch
from torch import nn

from panst3r_engine.model.configs import InputMixerConfig
from panst3r_engine.model.layers import Attention, Mlp, RoPE2D

NORM_EPS = 1e-5  # every PanSt3R-specific LayerNorm uses the torch default


class MixerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: RoPE2D) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=True, rope=rope)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class InputMixer(nn.Module):
    """``in_proj`` (concat -> dim), ``mixer_blk.{i}``, ``mixer_norm``.

    Args:
        cfg: widths and depth.
        in_dim: width of the concatenated backbone tokens (2816 in full size).
    """

    def __init__(self, cfg: InputMixerConfig, in_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(in_dim, cfg.dim)
        rope = RoPE2D(base=100.0)
        self.mixer_blk = nn.ModuleList(
            MixerBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth)
        )
        self.mixer_norm = nn.LayerNorm(cfg.dim, eps=NORM_EPS)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, in_dim], pos [B, N, 2] int64 (row, col) -> [B, N, dim]."""
        x = self.in_proj(tokens)
        for blk in self.mixer_blk:
            x = blk(x, pos)
        return self.mixer_norm(x)
