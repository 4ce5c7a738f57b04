"""Panoptic head: per-view feature encoding, joint keyframe decoding, non-keyframe prediction.

Children are named as in the official checkpoints (state-dict prefix ``panoptic_decoder.``):
``input_mixer`` (v2 only), ``upscaler``, ``mask_transformer``. Views are taken in their
natural orientation (the official landscape transposes are not reproduced; the pipeline
feeds landscape views).
"""

from __future__ import annotations

import torch
from torch import nn

from panst3r_engine.model.configs import PanopticConfig
from panst3r_engine.model.input_mixer import InputMixer
from panst3r_engine.model.loftup import LoftUpUpscaler
from panst3r_engine.model.mask_transformer import MaskTransformer
from panst3r_engine.model.upscalers import PixelShuffleUpscaler


def _check_widths(cfg: PanopticConfig) -> None:
    """The upscaler's outputs must match the mask transformer's hidden and mask widths."""
    mt = cfg.mask_transformer
    if cfg.loftup is not None:
        if cfg.input_mixer is None or cfg.loftup.dim != mt.mask_dim:
            raise ValueError("LoftUp needs an input mixer and loftup.dim == mask_transformer.mask_dim")
    elif cfg.pixel_shuffle is not None:
        dims = cfg.pixel_shuffle.dims
        if dims[0] != mt.hidden_dim or dims[3] != mt.mask_dim:
            raise ValueError("pixel_shuffle.dims must start with hidden_dim and end with mask_dim")
    else:
        raise ValueError("PanopticConfig needs either `loftup` (v2) or `pixel_shuffle` (v1)")


class PanopticDecoder(nn.Module):
    """PanSt3R panoptic decoder (v1: PixelShuffle; v2: InputMixer + LoftUp).

    Args:
        cfg: panoptic head configuration.
        concat_dim: width of the per-token backbone concat (enc ++ dec ++ DINOv2; 2816 full size).
        patch_size: image pixels per token side.
    """

    def __init__(self, cfg: PanopticConfig, concat_dim: int, patch_size: int = 16) -> None:
        super().__init__()
        _check_widths(cfg)
        self.patch_size = patch_size
        hidden = cfg.mask_transformer.hidden_dim
        self.input_mixer: InputMixer | None
        if cfg.loftup is not None:
            self.input_mixer = InputMixer(cfg.input_mixer, concat_dim)
            self.upscaler = LoftUpUpscaler(cfg.loftup, cfg.input_mixer.dim, hidden)
        else:
            self.input_mixer = None
            self.upscaler = PixelShuffleUpscaler(cfg.pixel_shuffle, concat_dim)
        self.mask_transformer = MaskTransformer(cfg.mask_transformer)

    def encode_views(
        self, tokens: torch.Tensor, pos: torch.Tensor, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-view features for the mask transformer.

        tokens [B, N, concat_dim] on the (H/16)x(W/16) grid, pos [B, N, 2] int64 (row, col),
        images [B, 3, H, W] in [-1, 1] (same size for all B). Returns fpn [B, hidden, H/16, W/16]
        and mask_feats [B, mask_dim, H/2, W/2]. LoftUp's min-max scaling spans the batch:
        pass B=1 per view to match the official inference (max_bs=1).
        """
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        if tokens.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{tokens.shape[1]} tokens do not fit a {grid[0]}x{grid[1]} patch grid")
        if self.input_mixer is None:
            return self.upscaler(tokens, grid)
        return self.upscaler(self.input_mixer(tokens, pos), grid, images)

    def decode(
        self,
        fpn: list[torch.Tensor],
        mask_feats: list[torch.Tensor],
        class_embeddings: torch.Tensor,
        aux_outputs: bool = False,
        masks: bool = True,
    ) -> dict:
        """Joint decoding of keyframes.

        fpn: per view [hidden, h_v, w_v]; mask_feats: per view [mask_dim, H_v/2, W_v/2];
        class_embeddings [C, lang_dim] unit-norm. Returns ``pred_logits`` [Q, C], ``pred_masks``
        (list per view of [Q, H_v/2, W_v/2] logits) and ``out_queries`` [Q, hidden]
        (final query states before ``decoder_norm``); with ``aux_outputs`` also the
        per-layer predictions for deep supervision (training). ``masks=False``: no ``pred_masks``
        (make them view by view with :meth:`predict` on ``out_queries``; same values, bounded memory).
        """
        return self.mask_transformer(fpn, mask_feats, class_embeddings, aux_outputs=aux_outputs, masks=masks)

    def predict(self, queries: torch.Tensor, mask_feats: list[torch.Tensor], class_embeddings: torch.Tensor) -> dict:
        """Prediction heads only (non-keyframes): queries [Q, hidden] = ``out_queries`` of :meth:`decode`.

        Returns ``pred_logits`` [Q, C] and ``pred_masks`` (list per view of [Q, H_v/2, W_v/2]).
        """
        return self.mask_transformer.predict(queries, mask_feats, class_embeddings)
