"""Upscalers: patch tokens -> (stride-16 memory for the queries, stride-2 mask features).

v1 uses :class:`PixelShuffleUpscaler` (token MLPs + pixel shuffle, image ignored);
v2 uses :class:`panst3r_engine.model.loftup.LoftUpUpscaler` (image-guided; own file).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panst3r_engine.model.configs import PixelShuffleConfig
from panst3r_engine.model.layers import Mlp


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, h*w, C] row-major tokens -> channels-first map [B, C, h, w]."""
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> row-major tokens [B, h*w, C]."""
    return feature_map.flatten(2).transpose(1, 2)


class PixelShuffleUpscaler(nn.Module):
    """v1: three MLP + ``pixel_shuffle(2)`` stages (16 -> 8 -> 4 -> 2) and a stride-16 MLP.

    Keys ``proj_8``, ``proj_4``, ``proj_2``, ``proj_16`` (each a GELU ``Mlp``, no norm).

    Args:
        cfg: ``dims = (fpn, stride 8, stride 4, stride 2)`` widths and the MLP hidden factor.
        in_dim: width of the input tokens (2816 in full size).
    """

    def __init__(self, cfg: PixelShuffleConfig, in_dim: int) -> None:
        super().__init__()
        fpn_dim, dim8, dim4, dim2 = cfg.dims
        k = cfg.hidden_factor
        self.proj_8 = Mlp(in_dim, k * in_dim, 4 * dim8)
        self.proj_4 = Mlp(dim8, k * dim8, 4 * dim4)
        self.proj_2 = Mlp(dim4, k * dim4, 4 * dim2)
        self.proj_16 = Mlp(in_dim, k * in_dim, fpn_dim)

    @staticmethod
    def _up(proj: Mlp, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """MLP on tokens of an h x w grid, then pixel shuffle: [B, C/4, 2h, 2w]."""
        return F.pixel_shuffle(tokens_to_map(proj(tokens), height, width), 2)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, hs*ws, in_dim] on the ``grid = (hs, ws)`` patch grid.

        Returns fpn [B, fpn_dim, hs, ws] and mask features [B, dim2, 8hs, 8ws].
        """
        hs, ws = grid
        f8 = self._up(self.proj_8, tokens, hs, ws)
        f4 = self._up(self.proj_4, map_to_tokens(f8), 2 * hs, 2 * ws)
        f2 = self._up(self.proj_2, map_to_tokens(f4), 4 * hs, 4 * ws)
        f16 = tokens_to_map(self.proj_16(tokens), hs, ws)
        return f16, f2


__all__ = ["PixelShuffleUpscaler", "map_to_tokens", "tokens_to_map"]
