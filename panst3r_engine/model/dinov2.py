"""DINOv2 ViT/14 features on the MUSt3R patch grid.

Module and parameter names follow Hugging Face ``Dinov2Model`` of
transformers 4.x (``attention.attention.query`` ...), the spelling inside the
official PanSt3R checkpoints. The wrapper reproduces how PanSt3R feeds it
(as PanSt3R feeds DINOv2, arXiv 2506.21348 and naver/panst3r): undo the [-1, 1] normalisation, apply ImageNet
statistics, resize bilinearly to ``(H/16*14, W/16*14)`` so the 14-px DINO grid
equals the 16-px MUSt3R grid, and return the patch tokens after the final norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panst3r_engine.model.configs import DinoConfig
from panst3r_engine.model.layers.attention import attend

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchEmbeddings(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    """Patch embedding + cls token + position embedding resized (bicubic) to the grid."""

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.dim))  # training only; kept for the key set
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.pos_grid * cfg.pos_grid + 1, cfg.dim))
        self.patch_embeddings = PatchEmbeddings(cfg.patch_size, cfg.dim)

    def _positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        table = self.position_embeddings
        side = int(round((table.shape[1] - 1) ** 0.5))
        if grid_h == grid_w == side:
            return table
        patch = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        patch = patch.to(table.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((table[:, :1], patch), dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixels.shape
        x = self.patch_embeddings(pixels)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        return x + self._positions(height // self.patch_size, width // self.patch_size)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

        out = attend(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return out.transpose(1, 2).reshape(batch, tokens, dim)


class OutputDense(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, num_heads)
        self.output = OutputDense(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class Layer(nn.Module):
    """Pre-norm ViT layer with LayerScale on both residual branches."""

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attention = AttentionBlock(cfg.dim, cfg.num_heads)
        self.layer_scale1 = LayerScale(cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio))
        self.layer_scale2 = LayerScale(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class Dinov2Model(nn.Module):
    """The DINOv2 backbone; returns ``last_hidden_state`` (cls token first)."""

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.encoder(self.embeddings(pixels)))


class DinoV2Encoder(nn.Module):
    """PanSt3R's DINOv2 wrapper: [-1, 1] images -> patch tokens on the 16-px grid."""

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dinov2 = Dinov2Model(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [-1, 1] -> tokens [B, (H/16)(W/16), dim]."""
        _, _, height, width = images.shape
        stride, patch = self.cfg.output_stride, self.cfg.patch_size
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        pixels = ((images * 0.5 + 0.5) - mean) / std
        size = (height // stride * patch, width // stride * patch)
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        return self.dinov2(pixels)[:, 1:]
