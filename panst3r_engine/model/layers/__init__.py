"""Small building blocks shared by the networks: one concept per file."""

from panst3r_engine.model.layers.attention import Attention, CrossAttention, use_fused_attention
from panst3r_engine.model.layers.mlp import Mlp
from panst3r_engine.model.layers.rope import RoPE2D, patch_positions

__all__ = ["Attention", "CrossAttention", "Mlp", "RoPE2D", "patch_positions", "use_fused_attention"]
