"""MUSt3R decoder: a shared ViT-B stack with one token memory per layer.

Reproduces ``MUSt3R`` with ``feedback_type='single_mlp'`` and
``memory_mode='norm_y'`` (MUSt3R, arXiv 2503.01661, the memory mechanism; naver/must3r):

* **update** pass: new images cross-attend to the memory plus the *other*
  new images (never to themselves, except a lone first image), then their
  layer inputs are stored, normalised by each block's ``norm_y``; all but the
  last layer first receive the feedback offset ``MLP(LN(x_in_last_block))``.
* **render** pass: images cross-attend to the frozen memory; nothing is stored.

Every image gets the learned ``image2_embed`` except the very first image of
the first update, which defines the world frame (the reference camera).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from panst3r_engine.model.configs import DecoderConfig
from panst3r_engine.model.layers import Attention, CrossAttention, Mlp, RoPE2D

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


@dataclass
class Memory:
    """Per-layer memory tokens of the images seen so far (batch of one scene).

    ``layers[l]`` is [M, dim]: ``norm_y`` of the tokens entering block ``l``
    (with feedback), for all ``num_images`` memorised images concatenated.
    """

    layers: list[torch.Tensor]
    num_images: int
    _kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.layers[0].shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)


class DecoderBlock(nn.Module):
    """Self-attention (RoPE) -> cross-attention to memory (no RoPE) -> MLP, all pre-norm."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: nn.Module) -> None:
        super().__init__()
        self.norm1 = LayerNorm6(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=True, rope=rope)
        self.norm2 = LayerNorm6(dim)
        self.norm_y = LayerNorm6(dim)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=True)
        self.norm3 = LayerNorm6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor) -> torch.Tensor:
        """x [B, N, dim]; mem_k/mem_v [B, M, dim] already projected by ``projk``/``projv``."""
        x = x + self.attn(self.norm1(x), pos)
        x = x + self.cross_attn.forward_projected(self.norm2(x), mem_k, mem_v)
        return x + self.mlp(self.norm3(x))

    def project_memory(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn.projk(mem), self.cross_attn.projv(mem)


class LinearHead(nn.Module):
    """Per-token Linear to a ``patch x patch x C`` block, unshuffled to pixels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, patch_size * patch_size * out_channels)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, feats: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """feats [B, N, dim] (after norm_dec) -> raw pointmaps [B, H, W, C]."""
        batch = feats.shape[0]
        out = self.proj(feats.float()).transpose(1, 2).reshape(batch, -1, grid[0], grid[1])
        return F.pixel_shuffle(out, self.patch_size).permute(0, 2, 3, 1)


class MUSt3RDecoder(nn.Module):
    """Memory-based multi-view decoder with a linear pointmap head."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.feat_embed_enc_to_dec = nn.Linear(cfg.enc_dim, cfg.dim)
        self.image2_embed = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        rope = RoPE2D(cfg.rope_base)
        self.blocks_dec = nn.ModuleList(
            DecoderBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth)
        )
        self.feedback_layer = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))
        self.feedback_norm = nn.LayerNorm(cfg.dim, eps=1e-5)
        self.norm_dec = LayerNorm6(cfg.dim)
        self.head_dec = LinearHead(cfg.dim, cfg.patch_size, cfg.out_channels)

    # ------------------------------------------------------------------ update
    def update(self, tokens: list[torch.Tensor], pos: list[torch.Tensor], memory: Memory | None) -> Memory:
        """Add images to the memory (the official "update" pass); returns the new memory.

        Args:
            tokens: per new image, encoder tokens [N_i, enc_dim] (sizes may differ).
            pos: per new image, patch positions [N_i, 2].
            memory: the memory so far, or None to initialise (first image = reference).
        """
        xs = [self.feat_embed_enc_to_dec(t)[None] for t in tokens]
        xs = [x if (memory is None and i == 0) else x + self.image2_embed.to(x.dtype) for i, x in enumerate(xs)]
        entering: list[list[torch.Tensor]] = []  # per layer, per image: tokens entering the block
        for layer, block in enumerate(self.blocks_dec):
            entering.append(xs)
            normed = [block.norm_y(x[0]) for x in xs]
            old = memory.layers[layer] if memory is not None else None
            new_xs = []
            for i, x in enumerate(xs):
                keys = _visible_tokens(old, normed, i)
                k, v = block.project_memory(keys)
                new_xs.append(block(x, pos[i][None], k[None], v[None]))
            xs = new_xs
        return self._store(entering, memory)

    def _store(self, entering: list[list[torch.Tensor]], memory: Memory | None) -> Memory:
        """Append ``norm_y(x_l + feedback)`` of the new images to every layer."""
        last = len(self.blocks_dec) - 1
        offsets = [self.feedback_layer(self.feedback_norm(x)) for x in entering[last]]
        layers = []
        for layer, block in enumerate(self.blocks_dec):
            new = [block.norm_y((x + off) if layer < last else x)[0] for x, off in zip(entering[layer], offsets)]
            old = [memory.layers[layer]] if memory is not None else []
            layers.append(torch.cat(old + new, dim=0))
        count = (memory.num_images if memory is not None else 0) + len(entering[0])
        return Memory(layers=layers, num_images=count)

    # ------------------------------------------------------------------ render
    def render(self, tokens: torch.Tensor, pos: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode images of one size against a frozen memory (the official "render" pass).

        Args:
            tokens: encoder tokens [B, N, enc_dim]; pos: [B, N, 2].
        Returns:
            feats [B, N, dim] (last block after ``norm_dec``), raw pointmaps [B, H, W, 7].
        """
        x = self.feat_embed_enc_to_dec(tokens) + self.image2_embed.to(tokens.dtype)
        batch = x.shape[0]
        for layer, block in enumerate(self.blocks_dec):
            k, v = self._memory_kv(memory, layer, block)
            x = block(x, pos, k.expand(batch, -1, -1), v.expand(batch, -1, -1))
        feats = self.norm_dec(x)
        grid = (int(pos[0, :, 0].max()) + 1, int(pos[0, :, 1].max()) + 1)
        return feats, self.head_dec(feats, grid)

    def _memory_kv(self, memory: Memory, layer: int, block: DecoderBlock) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected keys/values of a frozen memory layer, computed once per memory."""
        if layer not in memory._kv:
            k, v = block.project_memory(memory.layers[layer])
            memory._kv[layer] = (k[None], v[None])
        return memory._kv[layer]


def _visible_tokens(old: torch.Tensor | None, normed: list[torch.Tensor], index: int) -> torch.Tensor:
    """Keys an image sees in an update: old memory + the other new images (itself only when alone)."""
    others = [t for j, t in enumerate(normed) if j != index]
    if old is None and not others:
        others = [normed[index]]
    parts = ([old] if old is not None else []) + others
    return torch.cat(parts, dim=0)
