"""Mask2Former losses on hand-worked cases: focal class loss, point BCE, Dice, normalisation, deep supervision."""

from __future__ import annotations

import math

import torch

from panst3r_engine.train.losses import (
    LayerPrediction,
    LossConfig,
    PanopticCriterion,
    Targets,
    layer_losses,
    sigmoid_focal_loss,
)
from panst3r_engine.train.matcher import Match


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def focal(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    p_t = p if t else 1 - p
    alpha_t = alpha if t else 1 - alpha
    return alpha_t * (1 - p_t) ** gamma * (softplus(-x) if t else softplus(x))


def test_focal_loss_at_zero_logit() -> None:
    # p = 0.5: positive 0.25 * 0.25 * log 2, negative 0.75 * 0.25 * log 2.
    out = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), 0.25, 2.0)
    torch.testing.assert_close(out, torch.tensor([0.0625, 0.1875]) * math.log(2))


LOGITS = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 1.0, 0.5]])
VALUES = (1.5, -0.5)
POINTS = 64


def _sample() -> tuple[LayerPrediction, Targets]:
    # Constant masks: every sampled point sees the same value, so each term is closed-form.
    masks = torch.stack([torch.full((2, 4, 4), v) for v in VALUES])  # [Q=2, V=2, 4, 4]
    targets = Targets(torch.stack([torch.ones(2, 8, 8), torch.zeros(2, 8, 8)]), torch.tensor([0, 1]))
    return LayerPrediction(LOGITS, masks), targets


def _expected_terms(n_m: float) -> dict[str, float]:
    onehot = [[1, 0, 0], [0, 1, 0]]
    ce = sum(focal(float(LOGITS[q, c]), onehot[q][c]) for q in range(2) for c in range(3))
    truth = (1.0, 0.0)
    bce = [softplus(-x) if t else softplus(x) for x, t in zip(VALUES, truth)]
    sig = [1 / (1 + math.exp(-x)) for x in VALUES]
    dice = [1 - (2 * POINTS * s * t + 1) / (POINTS * s + POINTS * t + 1) for s, t in zip(sig, truth)]
    # Per (mask, view) terms summed over 2 masks x 2 views, divided by V = 2 and by n_m.
    return {"class": ce / n_m, "mask": 2 * sum(bce) / 2 / n_m, "dice": 2 * sum(dice) / 2 / n_m}


def test_layer_losses_match_the_closed_form() -> None:
    pred, targets = _sample()
    match = Match(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cfg = LossConfig(num_points=POINTS)
    got = layer_losses(pred, targets, match, cfg, torch.Generator().manual_seed(0))
    want = _expected_terms(1.0)
    for key in want:
        assert math.isclose(float(got[key]), want[key], rel_tol=1e-5), key


def test_unmatched_queries_learn_no_class() -> None:
    pred, targets = _sample()
    match = Match(torch.tensor([0]), torch.tensor([0]))
    got = layer_losses(pred, targets, match, LossConfig(num_points=8), torch.Generator())
    ce = sum(focal(float(LOGITS[0, c]), c == 0) for c in range(3))
    ce += sum(focal(float(LOGITS[1, c]), 0) for c in range(3))
    assert math.isclose(float(got["class"]), ce, rel_tol=1e-6)


def _output(pred: LayerPrediction, aux: int) -> dict:
    layer = {"pred_logits": pred.logits, "pred_masks": list(pred.masks.unbind(1))}
    return {**layer, "aux_outputs": [dict(layer) for _ in range(aux)]}


def test_criterion_normalises_by_masks_and_sums_every_layer() -> None:
    pred, targets = _sample()
    want = _expected_terms(n_m=2.0)  # 2 target masks in the batch
    total_one = want["class"] + 20 * want["mask"] + want["dice"]
    criterion = PanopticCriterion(LossConfig(num_points=POINTS))
    for aux in (0, 3):
        got = criterion([_output(pred, aux)], [targets], torch.Generator().manual_seed(0))
        # The matcher pairs q0 with t0 and q1 with t1 (lower cost on both terms), at every layer.
        assert math.isclose(float(got["total"]), (aux + 1) * total_one, rel_tol=1e-5), aux
        assert math.isclose(float(got["mask"]), want["mask"], rel_tol=1e-5)


def test_without_deep_supervision_only_the_final_layer_counts() -> None:
    pred, targets = _sample()
    criterion = PanopticCriterion(LossConfig(num_points=POINTS, deep_supervision=False))
    one = criterion([_output(pred, 0)], [targets], torch.Generator().manual_seed(0))["total"]
    three = criterion([_output(pred, 3)], [targets], torch.Generator().manual_seed(0))["total"]
    torch.testing.assert_close(one, three)


def test_gradients_reach_logits_and_masks() -> None:
    pred, targets = _sample()
    logits = LOGITS.clone().requires_grad_()
    masks = pred.masks.clone().requires_grad_()
    out = _output(LayerPrediction(logits, masks), 1)
    out["pred_masks"] = list(masks.unbind(1))
    PanopticCriterion(LossConfig(num_points=16))([out], [targets], torch.Generator())["total"].backward()
    assert logits.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0
