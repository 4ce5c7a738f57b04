"""Hungarian matching of queries to ground-truth segments (Mask2Former, Cheng et al. CVPR 2022).

One query predicts one instance across all views of a sample, so a target is a multi-view mask
[V, H, W]. The cost of pairing query q with target t is (PanSt3R fact sheet §9.3):

    C = 20 * mean BCE(mask_q, mask_t) + 1 * (-softmax(logits_q)[class_t]) + 1 * Dice(mask_q, mask_t)

on P uniform random points per view shared by all masks of that view (the class cost uses a
softmax over classes even though the classifier is trained with sigmoids, as released). The
assignment is scipy's ``linear_sum_assignment``; with more targets than queries the surplus
targets stay unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from panst3r_engine.train.points import point_sample, random_points


@dataclass(frozen=True)
class MatchWeights:
    mask: float = 20.0
    class_: float = 1.0
    dice: float = 1.0


@dataclass(frozen=True)
class Match:
    """Matched pairs: ``queries[i]`` predicts target ``targets[i]`` (both int64 [M])."""

    queries: torch.Tensor
    targets: torch.Tensor


def dice_cost(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)``: probs [Q, K], targets [T, K] -> [Q, T]."""
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE over points: logits [Q, K], targets [T, K] -> [Q, T]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def match_cost(
    logits: torch.Tensor,
    masks: torch.Tensor,
    target_masks: torch.Tensor,
    target_labels: torch.Tensor,
    coords: torch.Tensor,
    weights: MatchWeights = MatchWeights(),
) -> torch.Tensor:
    """Cost matrix [Q, T].

    logits [Q, C]; masks [Q, V, h, w] logits; target_masks [T, V, H, W] in {0, 1};
    target_labels [T] class indices; coords [V, P, 2] shared points.
    """
    pred = point_sample(masks, coords).flatten(1)  # [Q, V*P]
    tgt = point_sample(target_masks, coords).flatten(1).to(pred.device)  # [T, V*P]
    cost_class = -logits.float().softmax(-1)[:, target_labels]
    return (
        weights.mask * bce_cost(pred, tgt) + weights.class_ * cost_class + weights.dice * dice_cost(pred.sigmoid(), tgt)
    )


@torch.no_grad()
def hungarian_match(
    logits: torch.Tensor,
    masks: torch.Tensor,
    target_masks: torch.Tensor,
    target_labels: torch.Tensor,
    num_points: int,
    generator: torch.Generator,
    weights: MatchWeights = MatchWeights(),
) -> Match:
    """Optimal one-to-one assignment of queries to targets (see :func:`match_cost` for shapes)."""
    empty = torch.zeros(0, dtype=torch.int64)
    if target_labels.numel() == 0:
        return Match(empty, empty)
    coords = random_points((masks.shape[1], num_points), generator)
    cost = match_cost(logits, masks, target_masks, target_labels, coords, weights)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return Match(torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
