"""v2 upscaler (LoftUp): stride-2 mask features by cross-attention from image-guided queries.

High-res queries come from Fourier features of the half-resolution RGB image
(min-max scaled over the whole batch) through a small conv stack; keys/values are
the low-res mixer tokens plus a learned Fourier position code. Shapes in docstrings
use hs x ws for the patch grid and H x W for the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panst3r_engine.model.configs import LoftUpConfig
from panst3r_engine.model.layers import CrossAttention, Mlp
from panst3r_engine.model.upscalers import map_to_tokens, tokens_to_map

NORM_EPS = 1e-5
GUIDANCE_SCALE = 0.5  # output stride 2: the guidance image is the input at half size


class MinMaxScale(nn.Module):
    """Per channel ``(x - min) / max(max - min, 1e-4) - 0.5``, min/max over batch AND pixels.

    Because the statistics span the batch, results depend on which images share a call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        flat = x.transpose(0, 1).reshape(channels, -1)
        low = flat.min(dim=-1).values.reshape(1, channels, 1, 1)
        span = flat.max(dim=-1).values.reshape(1, channels, 1, 1) - low
        return (x - low) / span.clamp_min(1e-4) - 0.5


class ImplicitFeaturizer(nn.Module):
    """Fourier features of the pixel grid (and optionally of the input's colours).

    The base stack is ``[y, x]`` (linspace(-1, 1) over rows / columns), plus the 3
    input channels when ``color_feats``. With ``D`` stack channels and ``F`` frequencies
    ``f_k = exp(linspace(-2, 10, F))``, the output is ``sin(f_k s_d + b0[k, d])`` for all
    (k, d) frequency-major, then the cos analogue, then (if ``color_feats``) the input.
    ``biases`` is stored [2, D, F] and reinterpreted (reshape, not transpose) as [2, F, D].
    """

    def __init__(self, color_feats: bool, n_freqs: int) -> None:
        super().__init__()
        self.color_feats = color_feats
        self.n_freqs = n_freqs
        self.dim_multiplier = 5 if color_feats else 2
        self.biases = nn.Parameter(torch.zeros(2, self.dim_multiplier, n_freqs))

    @property
    def out_channels(self) -> int:
        return 2 * self.n_freqs * self.dim_multiplier + (3 if self.color_feats else 0)

    def _grid(self, batch: int, height: int, width: int, ref: torch.Tensor) -> torch.Tensor:
        ys = torch.linspace(-1, 1, height, device=ref.device, dtype=ref.dtype)
        xs = torch.linspace(-1, 1, width, device=ref.device, dtype=ref.dtype)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
        return grid.unsqueeze(0).expand(batch, 2, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, h, w] (only its size is used unless ``color_feats``) -> [B, out_channels, h, w]."""
        batch, _, height, width = x.shape
        stack = self._grid(batch, height, width, x)
        if self.color_feats:
            stack = torch.cat([stack, x], dim=1)
        n_f, n_d = self.n_freqs, self.dim_multiplier
        freqs = torch.exp(torch.linspace(-2, 10, n_f, device=x.device, dtype=x.dtype))
        args = stack.unsqueeze(1) * freqs.reshape(1, n_f, 1, 1, 1)  # [B, F, D, h, w]
        sin = torch.sin(args + self.biases[0].reshape(1, n_f, n_d, 1, 1))
        cos = torch.cos(args + self.biases[1].reshape(1, n_f, n_d, 1, 1))
        feats = [sin.reshape(batch, n_f * n_d, height, width), cos.reshape(batch, n_f * n_d, height, width)]
        if self.color_feats:
            feats.append(x)
        return torch.cat(feats, dim=1)


class CrossOnlyBlock(nn.Module):
    """``x += CA(norm2(x), norm_y(y))``, ``x += mlp(norm3(x))``; no self-attention, no RoPE."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, dim)
        self.norm_y = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [B, Nx, dim] high-res queries, y [B, Ny, dim] low-res keys (left unchanged)."""
        y = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y, y)
        return x + self.mlp(self.norm3(x))


def _first_conv(in_channels: int, dim: int) -> nn.Sequential:
    """GN(1) -> conv3 -> GN(8) -> ReLU -> conv3 -> GN(8) -> ReLU (keys 0, 1, 2, 4, 5)."""
    return nn.Sequential(
        nn.GroupNorm(1, in_channels, eps=NORM_EPS),
        nn.Conv2d(in_channels, dim, 3, padding=1),
        nn.GroupNorm(8, dim, eps=NORM_EPS),
        nn.ReLU(),
        nn.Conv2d(dim, dim, 3, padding=1),
        nn.GroupNorm(8, dim, eps=NORM_EPS),
        nn.ReLU(),
    )


class LoftUpUpscaler(nn.Module):
    """v2 upscaler. Keys: ``patch_embed``, ``lr_pe``, ``lr_input_proj``, ``fourier_feat``,
    ``first_conv``, ``ca_transformer_blocks``, ``ca_transformer_norm``.

    Args:
        cfg: LoftUp widths (``dim`` = mask feature width), depth, heads and frequencies.
        in_dim: width of the incoming (mixer) tokens.
        fpn_dim: width of the stride-16 memory map (the mask transformer's hidden width).
    """

    def __init__(self, cfg: LoftUpConfig, in_dim: int, fpn_dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_dim, fpn_dim, 1)
        self.lr_pe = ImplicitFeaturizer(color_feats=False, n_freqs=cfg.lr_freqs)
        self.lr_input_proj = nn.Sequential(
            nn.Linear(in_dim + self.lr_pe.out_channels, cfg.dim), nn.LayerNorm(cfg.dim, eps=NORM_EPS)
        )
        featurizer = ImplicitFeaturizer(color_feats=True, n_freqs=cfg.n_freqs)
        self.fourier_feat = nn.Sequential(MinMaxScale(), featurizer)
        self.first_conv = _first_conv(featurizer.out_channels, cfg.dim)
        self.ca_transformer_blocks = nn.ModuleList(CrossOnlyBlock(cfg.dim, cfg.num_heads) for _ in range(cfg.depth))
        self.ca_transformer_norm = nn.LayerNorm(cfg.dim, eps=NORM_EPS)

    def guidance(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [-1, 1] -> high-res query map [B, dim, H/2, W/2]."""
        half = F.interpolate(images, scale_factor=GUIDANCE_SCALE, mode="bilinear", align_corners=False)
        # channels-last: the convs' preferred layout on CPU (oneDNN), and the map's tokens [B, HW, C] are then a
        # free view, so the transformer blocks read contiguous rows instead of copying the map (same values)
        return self.first_conv(self.fourier_feat(half).contiguous(memory_format=torch.channels_last))

    def low_res_keys(self, lr_map: torch.Tensor) -> torch.Tensor:
        """lr_map [B, in_dim, hs, ws] -> key tokens [B, hs*ws, dim] (features ++ Fourier PE)."""
        with_pe = torch.cat([lr_map, self.lr_pe(lr_map)], dim=1)
        return self.lr_input_proj(map_to_tokens(with_pe))

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int], images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, hs*ws, in_dim], images [B, 3, H, W].

        Returns fpn [B, fpn_dim, hs, ws] and mask features [B, dim, H/2, W/2].
        """
        lr_map = tokens_to_map(tokens, *grid)
        fpn = self.patch_embed(lr_map)
        hr_map = self.guidance(images)
        x = map_to_tokens(hr_map)
        y = self.low_res_keys(lr_map)
        for block in self.ca_transformer_blocks:
            x = block(x, y)
        x = self.ca_transformer_norm(x)
        return fpn, tokens_to_map(x, *hr_map.shape[-2:])
