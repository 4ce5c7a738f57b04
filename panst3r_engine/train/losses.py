"""Mask2Former losses with deep supervision, as PanSt3R trains its panoptic decoder.

Per prediction layer (the initial queries, every intermediate decoder layer and the final one),
queries are matched to targets (:mod:`.matcher`) and three losses are summed over the batch
(PanSt3R fact sheet §9.3; Mask2Former, Cheng et al. CVPR 2022, §4):

- class: sigmoid focal loss (Lin et al. ICCV 2017; alpha 0.25, gamma 2) against one-hot targets,
  all zero for unmatched queries, summed over queries and classes;
- mask: mean BCE over P random points per (matched mask, view), summed, divided by V;
- dice: ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`` per (matched mask, view), summed, / V.

Each is divided by n_m, the number of target masks in the batch (averaged over processes when
training is distributed, at least 1). Total = sum over layers of 1*class + 20*mask + 1*dice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from panst3r_engine.train.matcher import Match, MatchWeights, hungarian_match
from panst3r_engine.train.points import point_sample, random_points

NUM_POINTS = 12_288


@dataclass(frozen=True)
class Targets:
    """Ground truth of one sample: one multi-view binary mask and one class per segment."""

    masks: torch.Tensor  # [T, V, H, W] float32 in {0, 1}
    labels: torch.Tensor  # [T] int64 index into the training vocabulary

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass(frozen=True)
class LayerPrediction:
    logits: torch.Tensor  # [Q, C]
    masks: torch.Tensor  # [Q, V, h, w] logits


@dataclass(frozen=True)
class LossConfig:
    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    num_points: int = NUM_POINTS
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    deep_supervision: bool = True


def layer_predictions(output: dict, deep_supervision: bool = True) -> list[LayerPrediction]:
    """The decoder's output dict -> its predictions, first layer first and the final one last."""
    layers = (output.get("aux_outputs", []) if deep_supervision else []) + [output]
    return [LayerPrediction(p["pred_logits"], torch.stack(p["pred_masks"], dim=1)) for p in layers]


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise ``alpha_t (1 - p_t)^gamma BCE`` (alpha on positives, 1 - alpha on negatives)."""
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * bce


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row dice loss over the last axis: probs, targets [..., P] -> [...]."""
    numerator = 2 * (probs * targets).sum(-1)
    return 1 - (numerator + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


def layer_losses(
    pred: LayerPrediction, targets: Targets, match: Match, cfg: LossConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Un-normalised sums (class, mask / V, dice / V) of one sample at one layer."""
    logits = pred.logits.float()
    onehot = torch.zeros_like(logits)
    onehot[match.queries.to(logits.device), targets.labels[match.targets].to(logits.device)] = 1.0
    ce = sigmoid_focal_loss(logits, onehot, cfg.focal_alpha, cfg.focal_gamma).sum()
    if match.queries.numel() == 0:
        zero = pred.masks.sum() * 0.0
        return {"class": ce, "mask": zero, "dice": zero}
    views = pred.masks.shape[1]
    coords = random_points((match.queries.numel(), views, cfg.num_points), generator)
    sampled = point_sample(pred.masks[match.queries.to(logits.device)], coords)  # [M, V, P]
    truth = point_sample(targets.masks[match.targets], coords).to(sampled.device)
    bce = F.binary_cross_entropy_with_logits(sampled, truth, reduction="none").mean(-1)  # [M, V]
    dice = dice_loss(sampled.sigmoid(), truth)
    return {"class": ce, "mask": bce.sum() / views, "dice": dice.sum() / views}


def num_masks(targets: list[Targets], device: torch.device) -> torch.Tensor:
    """n_m: target masks in the batch, averaged over processes when distributed, at least 1."""
    count = torch.tensor(float(sum(len(t) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)


class PanopticCriterion:
    """Matching + losses over every prediction layer of every sample in a batch.

    ``__call__`` returns ``total`` (what to back-propagate) and, for logging, the final layer's
    normalised ``class``, ``mask`` and ``dice`` terms.
    """

    def __init__(self, cfg: LossConfig = LossConfig()) -> None:
        self.cfg = cfg
        self.match_weights = MatchWeights(cfg.mask_weight, cfg.class_weight, cfg.dice_weight)

    def __call__(
        self, outputs: list[dict], targets: list[Targets], generator: torch.Generator | list[torch.Generator]
    ) -> dict[str, torch.Tensor]:
        """``generator``: one for the batch, or one per sample (then a sample's points do not depend on
        which batch or process it lands in)."""
        cfg = self.cfg
        generators = generator if isinstance(generator, list) else [generator] * len(outputs)
        device = outputs[0]["pred_logits"].device
        n_m = num_masks(targets, device)
        total = torch.zeros((), device=device)
        final = {"class": total, "mask": total, "dice": total}
        for output, target, generator in zip(outputs, targets, generators):
            layers = layer_predictions(output, cfg.deep_supervision)
            for i, pred in enumerate(layers):
                match = hungarian_match(
                    pred.logits, pred.masks, target.masks, target.labels, cfg.num_points, generator, self.match_weights
                )
                terms = {k: v / n_m for k, v in layer_losses(pred, target, match, cfg, generator).items()}
                weighted = cfg.class_weight * terms["class"] + cfg.mask_weight * terms["mask"]
                total = total + weighted + cfg.dice_weight * terms["dice"]
                if i == len(layers) - 1:
                    final = {k: final[k] + terms[k] for k in final}
        return {"total": total, **{k: v.detach() for k, v in final.items()}}
