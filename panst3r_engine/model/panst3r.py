"""The PanSt3R network: MUSt3R + DINOv2 + panoptic decoder, with the official key names.

Its four children are the official state-dict prefixes: ``must3r_encoder``,
``must3r_decoder``, ``dino_encoder`` (holding ``dinov2``) and
``panoptic_decoder``. The class text embeddings are an input (not a
submodule): the released checkpoints carry no text-encoder weights.
"""

from __future__ import annotations

import torch
from torch import nn

from panst3r_engine.model.configs import ModelConfig
from panst3r_engine.model.dinov2 import DinoV2Encoder
from panst3r_engine.model.must3r_decoder import MUSt3RDecoder
from panst3r_engine.model.must3r_encoder import MUSt3REncoder
from panst3r_engine.model.panoptic_decoder import PanopticDecoder


class PanSt3R(nn.Module):
    """Holds the sub-networks; :mod:`panst3r_engine.model.inference` runs them in order."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.must3r_encoder = MUSt3REncoder(cfg.encoder)
        self.must3r_decoder = MUSt3RDecoder(cfg.decoder)
        self.dino_encoder = DinoV2Encoder(cfg.dino)
        self.panoptic_decoder = PanopticDecoder(cfg.panoptic, cfg.concat_dim, cfg.encoder.patch_size)

    @property
    def version(self) -> str:
        return self.cfg.version

    @property
    def patch_size(self) -> int:
        return self.cfg.encoder.patch_size

    @property
    def num_queries(self) -> int:
        return self.cfg.panoptic.mask_transformer.num_queries

    @property
    def text_dim(self) -> int:
        """Width of the class text embeddings the classifier expects."""
        return self.cfg.panoptic.mask_transformer.lang_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
