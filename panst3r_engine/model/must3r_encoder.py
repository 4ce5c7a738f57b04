"""MUSt3R image encoder: a ViT-L/16 with 2D RoPE, no cls token, no absolute positions.

Reproduces ``Dust3rEncoder`` of the official MUSt3R release (MUSt3R, arXiv 2503.01661; naver/must3r):
a 16x16 conv patch embedding, pre-norm blocks whose self-attention rotates q/k
by the (row, col) patch position, and a final ``norm_enc``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from panst3r_engine.model.configs import EncoderConfig
from panst3r_engine.model.layers import Attention, Mlp, RoPE2D, patch_positions

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class PatchEmbed(nn.Module):
    """Non-overlapping conv patch embedding; any H, W multiple of the patch size."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] -> tokens [B, N, dim], positions [B, N, 2] (row, col)."""
        batch, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        tokens = self.proj(images).flatten(2).transpose(1, 2)
        pos = patch_positions(height // self.patch_size, width // self.patch_size, images.device)
        return tokens, pos.unsqueeze(0).expand(batch, -1, -1)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, rope: nn.Module | None, norm_layer=LayerNorm6
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=True, rope=rope)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class MUSt3REncoder(nn.Module):
    """ViT encoder of MUSt3R. Always runs in float32, as the official one does under AMP."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.dim)
        rope = RoPE2D(cfg.rope_base)
        self.blocks_enc = nn.ModuleList(Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth))
        self.norm_enc = LayerNorm6(cfg.dim)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] in [-1, 1] -> tokens [B, N, dim] (after norm_enc), pos [B, N, 2]."""
        x, pos = self.patch_embed(images.float())
        for block in self.blocks_enc:
            x = block(x, pos)
        return self.norm_enc(x), pos
