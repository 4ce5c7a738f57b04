"""standard_v1 / standard_v2 post-processing: fixture parity and the selection rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine.postprocess import METHODS, postprocess
from tests.parity_utils import load_case

STANDARD = ("standard_v1", "standard_v2")


def box_logits(
    h: int, w: int, box: tuple[int, int, int, int], inside: float = 6.0, outside: float = -8.0
) -> np.ndarray:
    """[h, w] mask logits: ``inside`` on box (y0, y1, x0, x1), ``outside`` elsewhere."""
    m = np.full((h, w), outside, np.float32)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = inside
    return m


@pytest.mark.parametrize("method", STANDARD)
def test_postproc_fixture(parity_dir, method):
    arrays, meta = load_case(parity_dir, "postproc")
    res = postprocess(arrays["pp_in_pred_logits"], list(arrays["pp_in_pred_masks"]), arrays["pp_in_true_shape"], method)
    pan, ref_pan = np.stack(res.pan), arrays[f"pp_{method}_pan"]
    agree = pan == ref_pan
    assert (~agree).mean() <= 5e-4
    assert np.abs(np.stack(res.conf) - arrays[f"pp_{method}_conf"])[agree].max() <= 1e-5
    ours = [(s["id"], s["query_id"], s["category_id"]) for s in res.segments]
    ref = [(s["id"], s["query_id"], s["category_id"]) for s in meta["segments_info"][method]]
    assert ours == ref


@pytest.mark.parametrize("method", STANDARD)
def test_low_class_score_is_dropped(method):
    h, w = 16, 20
    masks = np.stack([box_logits(h, w, (0, 8, 0, 10)), box_logits(h, w, (8, 16, 10, 20))])
    logits = np.array([[3.0, -5.0], [-3.0, -2.5]], np.float32)  # query 1: max prob 0.076 < 0.1
    res = postprocess(logits, [masks], [[2 * h, 2 * w]], method)
    assert [s["query_id"] for s in res.segments] == [0]
    assert res.segments[0]["category_id"] == 0
    assert (res.pan[0][16:, 20:] == 0).all() and np.allclose(res.conf[0][16:, 20:], 0.1)


@pytest.mark.parametrize("method", STANDARD)
def test_occluded_duplicate_is_rejected(method):
    h, w = 16, 20
    big = box_logits(h, w, (2, 14, 2, 18))
    dup = box_logits(h, w, (3, 13, 3, 17))  # inside the big one, lower class score -> wins nothing
    other = box_logits(h, w, (0, 2, 0, 20))
    logits = np.array([[4.0, -4.0], [-4.0, 1.0], [-4.0, 3.0]], np.float32)
    res = postprocess(logits, [np.stack([big, dup, other])], [[2 * h, 2 * w]], method)
    assert [s["query_id"] for s in res.segments] == [0, 2]
    assert set(np.unique(res.pan[0])) <= {0, 1, 2}


@pytest.mark.parametrize("method", STANDARD)
def test_ids_shared_across_views(method):
    h, w = 12, 16
    a_v0, a_v1 = box_logits(h, w, (0, 6, 0, 8)), box_logits(h, w, (6, 12, 8, 16))
    b_v0, b_v1 = box_logits(h, w, (6, 12, 8, 16)), box_logits(h, w, (0, 6, 0, 8))
    logits = np.array([[3.0, -3.0], [-3.0, 3.0]], np.float32)
    views = [np.stack([a_v0, b_v0]), np.stack([a_v1, b_v1])]
    res = postprocess(logits, views, [[2 * h, 2 * w], [2 * h, 2 * w]], method)
    assert [s["id"] for s in res.segments] == [1, 2]
    assert res.pan[0][0, 0] == res.pan[1][-1, -1] == 1  # query 0 in both views
    assert res.pan[0][-1, -1] == res.pan[1][0, 0] == 2
    assert sum(s["area"] for s in res.segments) == sum(int((p > 0).sum()) for p in res.pan)


def test_nothing_selected_gives_void():
    masks = np.full((2, 8, 8), -8.0, np.float32)  # never >= 0.5: no original area
    logits = np.full((2, 3), 2.0, np.float32)
    for method in STANDARD:
        res = postprocess(logits, [masks], [[16, 16]], method)
        assert res.segments == [] and (res.pan[0] == 0).all() and np.allclose(res.conf[0], 0.1)


def test_views_of_different_sizes_and_input_types():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
    views = [rng.normal(size=(5, 6, 8)).astype(np.float32) * 4, rng.normal(size=(5, 8, 6)).astype(np.float32) * 4]
    shapes = [[12, 16], [16, 12]]
    ref = postprocess(logits, views, shapes, "standard_v2")
    torch_views = [torch.from_numpy(v)[None] for v in views]  # [1, Q, h, w] per view, as the model gives
    alt = postprocess(torch.from_numpy(logits), torch_views, torch.tensor(shapes), "standard_v2")
    assert [p.shape for p in ref.pan] == [(12, 16), (16, 12)]
    assert all(p.dtype == np.int32 for p in ref.pan) and all(c.dtype == np.float32 for c in ref.conf)
    for a, b in zip(ref.pan + ref.conf, alt.pan + alt.conf):
        np.testing.assert_array_equal(a, b)


def test_unknown_method():
    assert METHODS == ("standard_v1", "standard_v2", "qubo")
    with pytest.raises(ValueError):
        postprocess(np.zeros((1, 1)), [np.zeros((1, 2, 2))], [[4, 4]], "nope")
