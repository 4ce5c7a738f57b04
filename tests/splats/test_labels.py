"""Label images: the front object wins, void where nothing (or too little) covers a pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panst3r_engine.splats import SplatModel, render
from panst3r_engine.splats.labels import labels_from_ids, pixel_accuracy, segment_class_table


def two_discs(front_segment: int = 7, back_segment: int = 9) -> SplatModel:
    """Two opaque flat Gaussians on the optical axis: the front one (z=2) smaller than the back one (z=4)."""
    means = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0]])
    scales = torch.log(torch.tensor([[0.8, 0.8, 0.01], [0.2, 0.2, 0.01]]))
    return SplatModel(
        means=means,
        scales=scales,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1),
        opacities=torch.full((2,), math.log(0.98 / 0.02)),
        sh0=torch.zeros(2, 1, 3),
        shN=torch.zeros(2, 0, 3),
        segment=torch.tensor([back_segment, front_segment], dtype=torch.int32),
        class_id=torch.tensor([3, 1], dtype=torch.int32),
        background=torch.tensor([1.0, 0.0, 0.0]),
    )


@pytest.mark.parametrize("method", ["maxweight", "onehot"])
def test_front_object_wins(method: str) -> None:
    width, height = 48, 36
    K = np.array([[30.0, 0, 24.5], [0, 30.0, 18.5], [0, 0, 1]])  # the optical axis through pixel (18, 24)
    out = render(two_discs(), K, np.eye(4), width, height, labels=method)
    centre, ring, corner = (18, 24), (18, 24 + 6), (0, 0)  # front disc sigma 3 px, back disc 6 px
    assert out.segment[centre] == 7 and out.class_id[centre] == 1
    assert out.segment[ring] == 9 and out.class_id[ring] == 3
    assert out.segment[corner] == 0 and out.class_id[corner] == -1  # background: void
    # On the axis both discs have alpha 0.98: expected depth (0.98 * 2 + 0.02 * 0.98 * 4) / (1 - 0.02^2).
    assert out.depth[centre] == pytest.approx((0.98 * 2 + 0.02 * 0.98 * 4) / (1 - 0.02**2), abs=1e-5)
    assert out.alpha[centre] == pytest.approx(1 - 0.02**2, abs=1e-6)
    assert out.segment.dtype == np.int32 and out.class_id.dtype == np.int32
    np.testing.assert_allclose(out.rgb[corner], [1.0, 0.0, 0.0], atol=1e-6)  # the model's background colour


def test_methods_agree_on_the_discs() -> None:
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    a = render(two_discs(), K, np.eye(4), 32, 24, labels="maxweight")
    b = render(two_discs(), K, np.eye(4), 32, 24, labels="onehot")
    # Different void rules (alpha < 0.5 vs background weight winning the argmax) only differ at the rim.
    assert pixel_accuracy(a.segment, b.segment) > 0.97


def test_unlabelled_gaussians_are_void() -> None:
    model = two_discs(front_segment=0)
    model.class_id[1] = -1
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    for method in ("maxweight", "onehot"):
        out = render(model, K, np.eye(4), 32, 24, labels=method)
        assert out.segment[12, 16] == 0 and out.class_id[12, 16] == -1


def test_segment_class_table_majority() -> None:
    segment = torch.tensor([5, 5, 5, 2, 0, 2], dtype=torch.int32)
    class_id = torch.tensor([1, 4, 4, 3, 9, 3], dtype=torch.int32)
    segs, classes = segment_class_table(segment, class_id)
    assert segs.tolist() == [0, 2, 5] and classes.tolist() == [-1, 3, 4]


def test_labels_from_ids_threshold() -> None:
    ids = torch.tensor([[0, 1], [-1, 1]])
    alpha = torch.tensor([[0.9, 0.4], [0.9, 0.6]])
    seg, cls = labels_from_ids(
        ids, alpha, torch.tensor([3, 8], dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32)
    )
    assert seg.tolist() == [[3, 0], [0, 8]] and cls.tolist() == [[0, -1], [-1, 2]]
