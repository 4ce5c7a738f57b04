"""2D rotary position embedding (RoPE) as used by CroCo, MUSt3R and PanSt3R.

Each head vector is split into a row half and a column half. Inside each
half, element ``i`` is paired with element ``i + d/2`` ("rotate half") and the
pair is rotated by ``p * F0 * base^(-2i/d)`` where ``p`` is the integer patch
row (first half) or column (second half).
"""

from __future__ import annotations

import torch
from torch import nn


def patch_positions(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer (row, col) of every patch of an ``height x width`` grid, row-major.

    Returns:
        [height * width, 2] int64
    """
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    return torch.cartesian_prod(rows, cols)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RoPE2D(nn.Module):
    """Rotary embedding over a 2D patch grid. Has no parameters.

    Args:
        base: frequency base (100 for the "RoPE100" of the official models).
        f0: position scale, 1 unless a model is run at another resolution than trained.
    """

    def __init__(self, base: float = 100.0, f0: float = 1.0) -> None:
        super().__init__()
        self.base = base
        self.f0 = f0

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype):
        inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
        steps = torch.arange(length, device=device, dtype=inv_freq.dtype) * self.f0
        freqs = torch.outer(steps, inv_freq)
        freqs = torch.cat((freqs, freqs), dim=-1)
        # angles and their cos/sin in float32, then cast (as cuRoPE does): casting the angles (up to ~47 rad)
        # to bf16 first would err by up to ~0.24 (must3r_model.md, numerics); identical in float32
        return freqs.cos().to(dtype), freqs.sin().to(dtype)

    def _rotate(self, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos = nn.functional.embedding(pos, cos)[:, None]
        sin = nn.functional.embedding(pos, sin)[:, None]
        return x * cos + _rotate_half(x) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [B, heads, N, D] by patch positions ``pos`` [B, N, 2]."""
        half = x.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(pos.max()) + 1, x.device, x.dtype)
        rows, cols = x.chunk(2, dim=-1)
        rows = self._rotate(rows, pos[..., 0], cos, sin)
        cols = self._rotate(cols, pos[..., 1], cos, sin)
        return torch.cat((rows, cols), dim=-1)
