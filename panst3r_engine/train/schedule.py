"""Optimiser and learning-rate schedule of PanSt3R's training (fact sheet §9.1).

AdamW (Loshchilov & Hutter, ICLR 2019) with betas (0.9, 0.95); weight decay 0.05 except on
biases and norms (names ending ``.bias`` or containing ``norm``), which get none. The learning
rate rises linearly over the warm-up, then follows a half cosine down to ``min_lr``; the
official schedule counts epochs (5 warm-up of 200), this one counts optimiser steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed and not-decayed groups (names as in the state dict)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or "norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(module, weight_decay), lr=lr, betas=(0.9, 0.95))


class WarmupCosine:
    """LR factor of step s: (s + 1) / warmup during warm-up, then half cosine to ``min_lr / lr``.

    A class (not a lambda) so that ``LambdaLR.state_dict`` stays plain data.
    """

    def __init__(self, total: int, warmup: int, min_ratio: float) -> None:
        self.total, self.warmup, self.min_ratio = total, warmup, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total: int, warmup: int, lr: float, min_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total, warmup, min_lr / lr))
