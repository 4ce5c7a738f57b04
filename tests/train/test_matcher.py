"""Hungarian matching: hand-computed costs and an assignment known in advance."""

from __future__ import annotations

import math

import torch

from panst3r_engine.train.matcher import hungarian_match, match_cost
from panst3r_engine.train.points import point_sample, random_points


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_point_sample_reads_a_linear_ramp_exactly() -> None:
    # Pixel centres sit at (i + 0.5) / W (align_corners False); a ramp is linear in between.
    w = 8
    ramp = torch.arange(w, dtype=torch.float32).repeat(4, 1)[None, None]  # [1, 1, 4, 8]
    coords = torch.tensor([[[1.5 / w, 0.5], [4.25 / w, 0.3]]])  # x at 1.0 and 3.75 in pixel units
    values = point_sample(ramp, coords)
    torch.testing.assert_close(values, torch.tensor([[[1.0, 3.75]]]))


def test_cost_of_constant_masks_matches_the_closed_form() -> None:
    # With constant masks every point sees the same value, so BCE, Dice and class costs are closed-form.
    logits = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 1.0, 0.5]])
    values = (1.5, -0.5)
    masks = torch.stack([torch.full((1, 4, 4), v) for v in values])  # [Q=2, V=1, 4, 4]
    targets = torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)])  # [T=2, V=1, 8, 8]
    labels = torch.tensor([0, 1])
    points = 16
    coords = random_points((1, points), torch.Generator().manual_seed(0))
    cost = match_cost(logits, masks, targets, labels, coords)

    def expected(q: int, t: int) -> float:
        x, truth = values[q], 1.0 - t
        bce = softplus(-x) if truth else softplus(x)
        sig = 1 / (1 + math.exp(-x))
        dice = 1 - (2 * points * sig * truth + 1) / (points * sig + points * truth + 1)
        probs = torch.softmax(logits[q], -1)
        return 20 * bce - float(probs[labels[t]]) + dice

    want = torch.tensor([[expected(q, t) for t in range(2)] for q in range(2)])
    torch.testing.assert_close(cost, want, rtol=1e-5, atol=1e-5)


def test_matcher_finds_the_known_optimal_assignment() -> None:
    gen = torch.Generator().manual_seed(1)
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    right = 1 - left
    # t0: left half in both views; t1: right half in view 0 only.
    targets = torch.stack([torch.stack([left, left]), torch.stack([right, torch.zeros(8, 8)])])
    labels = torch.tensor([0, 0])

    def logit(mask: torch.Tensor) -> torch.Tensor:
        return 10 * mask - 5

    masks = torch.stack(
        [
            torch.stack([logit(right), logit(torch.zeros(8, 8))]),  # q0 ~ t1
            torch.randn(2, 8, 8, generator=gen),  # q1 noise
            torch.stack([logit(left), logit(left)]),  # q2 ~ t0
        ]
    )
    match = hungarian_match(torch.zeros(3, 2), masks, targets, labels, num_points=512, generator=gen)
    assert dict(zip(match.targets.tolist(), match.queries.tolist())) == {0: 2, 1: 0}


def test_class_cost_breaks_ties_between_identical_masks() -> None:
    gen = torch.Generator().manual_seed(2)
    mask = torch.zeros(1, 1, 4, 4)
    masks = mask.expand(2, -1, -1, -1)
    targets = torch.ones(2, 1, 4, 4)
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # q0 says class 0, q1 says class 1
    match = hungarian_match(logits, masks, targets, torch.tensor([1, 0]), num_points=32, generator=gen)
    assert dict(zip(match.targets.tolist(), match.queries.tolist())) == {0: 1, 1: 0}


def test_no_targets_match_nothing() -> None:
    match = hungarian_match(
        torch.zeros(3, 2),
        torch.zeros(3, 1, 4, 4),
        torch.zeros(0, 1, 4, 4),
        torch.zeros(0, dtype=torch.int64),
        8,
        torch.Generator(),
    )
    assert match.queries.numel() == 0 and match.targets.numel() == 0
