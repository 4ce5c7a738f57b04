"""Model sizes. Factories only set sizes; the modules read these dataclasses.

``panst3r_v1()`` / ``panst3r_v2()`` are the published models
(``configs/base.yaml`` / ``configs/base_v2.yaml`` of the paper's release);
``tiny=True`` keeps the same structure with small widths and depths, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Version = Literal["v1", "v2"]


@dataclass(frozen=True)
class EncoderConfig:
    """MUSt3R encoder: a ViT with 2D RoPE and no cls token."""

    patch_size: int = 16
    dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    rope_base: float = 100.0


@dataclass(frozen=True)
class DecoderConfig:
    """MUSt3R decoder with per-layer memory and a linear pointmap head."""

    enc_dim: int = 1024
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    out_channels: int = 7  # global xyz, local xyz, confidence
    rope_base: float = 100.0


@dataclass(frozen=True)
class DinoConfig:
    """DINOv2 ViT/14 (HF ``Dinov2Model`` layout, no registers)."""

    dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    pos_grid: int = 37  # 518 / 14
    output_stride: int = 16  # the MUSt3R grid the features are aligned to


@dataclass(frozen=True)
class PixelShuffleConfig:
    """v1 upscaler: ``dims = (fpn, stride 8, stride 4, stride 2 = mask_dim)``."""

    dims: tuple[int, int, int, int] = (768, 512, 384, 256)
    hidden_factor: int = 4


@dataclass(frozen=True)
class InputMixerConfig:
    """v2 input mixer: a few RoPE transformer blocks per view."""

    dim: int = 768
    depth: int = 3
    num_heads: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class LoftUpConfig:
    """v2 upscaler (LoftUp): image-guided cross-attention to stride 2."""

    dim: int = 384
    depth: int = 2
    num_heads: int = 4
    n_freqs: int = 20
    lr_freqs: int = 5


@dataclass(frozen=True)
class MaskTransformerConfig:
    """Mask2Former-style query decoder; ``lang_dim`` is the text embedding width."""

    hidden_dim: int = 768
    ff_dim: int = 2048
    num_queries: int = 200
    num_heads: int = 8
    depth: int = 6
    mask_dim: int = 256
    lang_dim: int = 768


@dataclass(frozen=True)
class PanopticConfig:
    version: Version = "v1"
    pixel_shuffle: PixelShuffleConfig | None = field(default_factory=PixelShuffleConfig)
    input_mixer: InputMixerConfig | None = None
    loftup: LoftUpConfig | None = None
    mask_transformer: MaskTransformerConfig = field(default_factory=MaskTransformerConfig)


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    panoptic: PanopticConfig = field(default_factory=PanopticConfig)
    postprocess_default: str = "standard_v2"

    @property
    def version(self) -> Version:
        return self.panoptic.version

    @property
    def concat_dim(self) -> int:
        """Width of the per-token input of the panoptic head: encoder + decoder + DINOv2."""
        return self.encoder.dim + self.decoder.dim + self.dino.dim


def _tiny_backbones() -> dict:
    return dict(
        encoder=EncoderConfig(dim=64, depth=2, num_heads=2),
        decoder=DecoderConfig(enc_dim=64, dim=64, depth=2, num_heads=2),
        dino=DinoConfig(dim=64, depth=2, num_heads=2),
    )


def panst3r_v1(tiny: bool = False) -> ModelConfig:
    """PanSt3R v1: PixelShuffle upscaler, 256-channel mask features."""
    if not tiny:
        return ModelConfig(panoptic=PanopticConfig(version="v1"))
    mt = MaskTransformerConfig(hidden_dim=64, ff_dim=128, num_heads=4, depth=2, mask_dim=32)
    ps = PixelShuffleConfig(dims=(64, 48, 40, 32))
    return ModelConfig(**_tiny_backbones(), panoptic=PanopticConfig("v1", ps, None, None, mt))


def panst3r_v2(tiny: bool = False) -> ModelConfig:
    """PanSt3R v2: RoPE input mixer + LoftUp upscaler, 384-channel mask features."""
    if not tiny:
        mt = MaskTransformerConfig(mask_dim=384)
        return ModelConfig(panoptic=PanopticConfig("v2", None, InputMixerConfig(), LoftUpConfig(), mt))
    mt = MaskTransformerConfig(hidden_dim=64, ff_dim=128, num_heads=4, depth=2, mask_dim=32)
    mixer = InputMixerConfig(dim=64, depth=1, num_heads=2)
    loftup = LoftUpConfig(dim=32, depth=1, num_heads=4)
    return ModelConfig(**_tiny_backbones(), panoptic=PanopticConfig("v2", None, mixer, loftup, mt))


def model_config(version: Version, tiny: bool = False) -> ModelConfig:
    if version == "v1":
        return panst3r_v1(tiny)
    if version == "v2":
        return panst3r_v2(tiny)
    raise ValueError(f"unknown PanSt3R version {version!r} (expected 'v1' or 'v2')")


__all__ = [
    "DecoderConfig",
    "DinoConfig",
    "EncoderConfig",
    "InputMixerConfig",
    "LoftUpConfig",
    "MaskTransformerConfig",
    "ModelConfig",
    "PanopticConfig",
    "PixelShuffleConfig",
    "model_config",
    "panst3r_v1",
    "panst3r_v2",
    "replace",
]
