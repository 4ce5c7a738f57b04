"""PQ^scene, per-view PQ and mIoU on small hand-made scenes; expected values worked out in comments.

Classes: things CHAIR=1, BED=2; stuff WALL=3, FLOOR=4; 0 is void.
"""

from __future__ import annotations

import numpy as np
import pytest

from panst3r_engine.eval.metrics import (
    mean_iou,
    panoptic_quality_per_view,
    panoptic_quality_scene,
    robust_classes,
)

CHAIR, BED, WALL, FLOOR = 1, 2, 3, 4
THINGS, STUFF = [CHAIR, BED], [WALL, FLOOR]


def canvas(n: int = 10, fill: int = WALL) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, instance) n x n, all ``fill`` with instance 0."""
    return np.full((n, n), fill, np.int64), np.zeros((n, n), np.int64)


def pq(pred, gt, **kw) -> dict:
    """PQ^scene of lists of (sem, inst) views."""
    return panoptic_quality_scene(
        [p[0] for p in pred], [p[1] for p in pred], [g[0] for g in gt], [g[1] for g in gt], THINGS, STUFF, **kw
    )


def pq_view(pred, gt, **kw) -> dict:
    return panoptic_quality_per_view(
        [p[0] for p in pred], [p[1] for p in pred], [g[0] for g in gt], [g[1] for g in gt], THINGS, STUFF, **kw
    )


def put(view, rows, cols, sem, inst=0) -> None:
    view[0][rows, cols] = sem
    view[1][rows, cols] = inst


def chair_scene() -> tuple:
    """GT 10x10: wall, chair id 1 at rows 0-3 x cols 0-3 (16 px), chair id 2 at rows 6-9 x cols 6-9 (16 px)."""
    gt = canvas()
    put(gt, slice(0, 4), slice(0, 4), CHAIR, 1)
    put(gt, slice(6, 10), slice(6, 10), CHAIR, 2)
    return gt


# ----------------------------------------------------------------------------- PQ^scene


def test_perfect_prediction_with_relabelled_ids_scores_one():
    rng = np.random.default_rng(0)
    gt = [canvas(), canvas()]
    for v in gt:
        put(v, slice(5, 10), slice(None), FLOOR)
        put(v, slice(0, 3), slice(0, 3), CHAIR, 7)
        put(v, slice(6, 9), slice(5, 9), BED, 8)
    # ids are arbitrary labels: map 7 -> 100, 8 -> 3; stuff pixels get random ids (ignored)
    pred = [(s.copy(), np.where(i == 7, 100, np.where(i == 8, 3, rng.integers(0, 50, i.shape)))) for s, i in gt]
    r = pq(pred, gt)
    for k in ("pq", "sq", "rq", "pq_th", "pq_st"):
        assert r[k] == pytest.approx(1.0)
    assert r["classes_scored"] == [CHAIR, BED, WALL, FLOOR]


def test_one_missed_thing():
    gt = chair_scene()
    pred = canvas()
    put(pred, slice(0, 4), slice(0, 4), CHAIR, 1)  # chair 2 predicted as wall
    r = pq([pred], [gt])
    # chair: TP 1 (IoU 1), FN 1 (not on predicted void) -> PQ = 1 / (1 + 0.5) = 2/3, SQ 1, RQ 2/3
    # wall: GT 100 - 32 = 68 px, pred 84 px, inter 68 -> IoU 68/84 (TP)
    assert r["per_class"][CHAIR]["fn"] == 1 and r["per_class"][CHAIR]["tp"] == 1
    assert r["pq_th"] == pytest.approx(2 / 3)
    assert r["pq_st"] == pytest.approx(68 / 84)
    assert r["pq"] == pytest.approx((2 / 3 + 68 / 84) / 2)
    assert r["sq"] == pytest.approx((1 + 68 / 84) / 2)
    assert r["rq"] == pytest.approx((2 / 3 + 1) / 2)


def test_one_false_positive():
    gt = canvas()
    put(gt, slice(0, 4), slice(0, 4), CHAIR, 1)
    pred = canvas()
    put(pred, slice(0, 4), slice(0, 4), CHAIR, 1)
    put(pred, slice(8, 10), slice(8, 10), CHAIR, 7)  # 4 px hallucinated on wall
    r = pq([pred], [gt])
    # chair: TP 1 (IoU 1) + FP 1 -> 1 / 1.5 = 2/3; wall: GT 84, pred 80, inter 80 -> 80/84
    assert (r["per_class"][CHAIR]["tp"], r["per_class"][CHAIR]["fp"]) == (1, 1)
    assert r["pq"] == pytest.approx((2 / 3 + 80 / 84) / 2)


def test_match_at_iou_0_6_and_strict_threshold_at_0_5():
    gt = canvas()
    put(gt, 0, slice(0, 10), CHAIR, 1)  # 10 px
    pred = canvas()
    put(pred, 0, slice(0, 6), CHAIR, 1)  # 6 px inside
    r = pq([pred], [gt])
    # chair: inter 6, union 10 -> IoU 0.6 > 0.5: PQ = SQ = 0.6, RQ 1
    # wall: GT 90, pred 94, inter 90 -> 90/94
    assert r["per_class"][CHAIR]["pq"] == pytest.approx(0.6)
    assert r["per_class"][CHAIR]["rq"] == pytest.approx(1.0)
    assert r["pq"] == pytest.approx((0.6 + 90 / 94) / 2)
    pred = canvas()
    put(pred, 0, slice(0, 5), CHAIR, 1)  # IoU 5/10 = 0.5 exactly: no match -> FP 1 + FN 1, PQ 0
    c = pq([pred], [gt])["per_class"][CHAIR]
    assert (c["tp"], c["fp"], c["fn"], c["pq"], c["sq"]) == (0, 1, 1, 0.0, 0.0)


def test_gt_void_pixels_are_removed_before_scoring():
    gt = canvas()
    gt[0][0] = 0  # row 0 void
    put(gt, slice(1, 3), slice(0, 5), CHAIR, 1)  # 10 px
    pred = canvas()
    put(pred, slice(0, 3), slice(0, 5), CHAIR, 3)  # 15 px, 5 on GT void
    put(pred, 0, slice(5, 10), CHAIR, 9)  # entirely on GT void: vanishes, no FP
    r = pq([pred], [gt])
    # after removal chair id 3 = 10 px = GT chair -> IoU 1; wall identical -> PQ 1
    # (without removal: IoU would be 10/15 and id 9 a FP)
    assert r["pq"] == pytest.approx(1.0)
    assert r["per_class"][CHAIR]["fp"] == 0


def test_prediction_mostly_on_gt_void_is_forgiven_not_false_positive():
    # 20x20 = 400 px; GT bed is 1 px (0.25 % < 0.5 %) -> bed dropped -> its pixel is GT void
    gt = canvas(20)
    put(gt, slice(0, 4), slice(0, 4), CHAIR, 1)  # 16 px
    put(gt, 10, 10, BED, 1)
    pred = canvas(20)
    put(pred, slice(0, 4), slice(0, 4), CHAIR, 1)
    put(pred, 10, 10, CHAIR, 4)  # 1 px, 100 % on GT void -> forgiven
    r = pq([pred], [gt])
    # chair TP 1 (IoU 1), no FP; wall GT 383 = pred 383 -> IoU 1
    assert r["classes_dropped"] == [BED]
    assert r["per_class"][CHAIR]["fp"] == 0 and r["pq"] == pytest.approx(1.0)
    put(pred, 10, slice(10, 13), CHAIR, 4)  # now 3 px, only 1/3 on void -> FP
    r = pq([pred], [gt])
    # chair: 1 / 1.5 = 2/3; wall: GT 383, pred 381, inter 381 -> 381/383
    assert r["per_class"][CHAIR]["fp"] == 1
    assert r["pq"] == pytest.approx((2 / 3 + 381 / 383) / 2)


def test_gt_segment_mostly_predicted_void_is_not_false_negative():
    gt = chair_scene()
    pred = canvas()
    put(pred, slice(0, 4), slice(0, 4), CHAIR, 1)
    put(pred, slice(6, 10), slice(6, 10), 0, 0)  # chair 2 predicted void (label 0)
    r = pq([pred], [gt])
    # chair: TP 1, chair 2 fully on predicted void -> no FN -> PQ 1
    # wall: GT 68, pred 68 (pred void lies on GT chair only) -> 1
    assert r["per_class"][CHAIR]["fn"] == 0 and r["pq"] == pytest.approx(1.0)
    pred[0][6:10, 6:10] = 99  # unknown predicted class is void as well
    assert pq([pred], [gt])["pq"] == pytest.approx(1.0)


def test_unlisted_predicted_class_is_void_for_matching():
    # class 99 is neither thing nor stuff: its predicted pixels are void (Panoptic Lifting turns
    # unknown predicted categories into the void colour before matching)
    gt = chair_scene()
    pred = canvas()
    put(pred, slice(0, 2), slice(0, 4), CHAIR, 1)  # 8 px on the top half of GT chair 1
    put(pred, slice(2, 4), slice(0, 4), 99, 5)  # 8 px: the bottom half of GT chair 1
    put(pred, slice(6, 9), slice(6, 9), 99, 0)  # 9 of the 16 px of GT chair 2; its other 7 px predicted wall
    r = pq([pred], [gt])
    # chair 1 vs pred id 1: inter 8; union = pred 8 + GT 16 - 8 GT px on pred void - inter 8 = 8 -> IoU 1
    #   (if 99 were not void: 8 / 16 = 0.5, no match)
    # chair 2: unmatched, 9/16 > 1/2 of it on predicted void -> no FN
    # chair: TP 1, FP 0, FN 0 -> PQ 1
    # wall: GT 68 px, all predicted wall; pred wall = 100 - 8 - 8 - 9 = 75 px (7 on GT chair 2) -> IoU 68/75
    c = r["per_class"][CHAIR]
    assert (c["tp"], c["fp"], c["fn"], c["iou_sum"]) == (1, 0, 0, pytest.approx(1.0))
    assert r["per_class"][WALL]["pq"] == pytest.approx(68 / 75)
    assert r["pq"] == pytest.approx((1 + 68 / 75) / 2)
    # boundary: 99 on exactly half of chair 2 (rows 6-7 x cols 6-9 = 8 px) is not "mostly" void -> FN
    pred[0][6:10, 6:10], pred[0][6:8, 6:10] = WALL, 99
    r = pq([pred], [gt])
    # chair: TP 1, FN 1 -> 1 / 1.5 = 2/3; wall: pred 100 - 8 - 8 - 8 = 76 px -> IoU 68/76
    assert (r["per_class"][CHAIR]["tp"], r["per_class"][CHAIR]["fn"]) == (1, 1)
    assert r["pq"] == pytest.approx((2 / 3 + 68 / 76) / 2)


def test_class_covered_by_unlisted_prediction_stays_in_mean_with_zero():
    # GT: wall, bed id 1 at rows 0-1 x cols 0-4 (10 px = 10 %). The prediction never says "bed":
    # 8 bed px are predicted as the unlisted class 99, the other 2 as wall.
    gt = canvas()
    put(gt, slice(0, 2), slice(0, 5), BED, 1)
    pred = canvas()
    put(pred, slice(0, 2), slice(0, 4), 99, 0)
    r = pq([pred], [gt])
    # Reference filter (Panoptic Lifting): bed has no predicted pixel, so the prediction side does not
    # test it; GT side 10 % >= 0.5 % -> bed is kept (chair and floor: absent on both sides -> dropped).
    # bed: its GT segment is 8/10 on predicted void -> no FN; no predicted bed -> TP = FP = FN = 0.
    # The reference averages over all kept classes with PQ 0 where TP + FP/2 + FN/2 = 0, so bed counts
    # as 0 in the mean (COCO panopticapi would skip it; we follow the reference).
    # wall: GT 90, pred 92 (2 on GT bed, none on GT void), inter 90 -> IoU 90/92
    assert r["classes_scored"] == [BED, WALL]
    b = r["per_class"][BED]
    assert (b["tp"], b["fp"], b["fn"], b["pq"], b["sq"], b["rq"]) == (0, 0, 0, 0.0, 0.0, 0.0)
    assert r["pq_th"] == 0.0 and r["sq_th"] == 0.0 and r["rq_th"] == 0.0
    assert r["pq_st"] == pytest.approx(90 / 92)
    assert r["pq"] == pytest.approx((0 + 90 / 92) / 2)
    assert r["rq"] == pytest.approx((0 + 1) / 2)


def test_class_present_on_one_side_only_is_kept_and_scores_zero():
    # GT: wall rows 0-7 (80 px), floor rows 8-9 (20 px). Prediction: wall everywhere except
    # chair id 3 at rows 0-1 x cols 0-1 (4 px): floor missed entirely, chair hallucinated.
    gt = canvas()
    put(gt, slice(8, 10), slice(None), FLOOR)
    pred = canvas()
    put(pred, slice(0, 2), slice(0, 2), CHAIR, 3)
    r = pq([pred], [gt])
    # floor: GT 20 %, prediction 0 px (not tested there) -> kept; GT floor not on predicted void -> FN 1, PQ 0
    # chair: prediction 4 %, GT 0 px -> kept; pred chair lies on GT wall, not void -> FP 1, PQ 0
    # bed: absent from both -> dropped
    # wall: GT 80, pred 96, inter 76 -> union 100 -> IoU 0.76, TP
    assert r["classes_scored"] == [CHAIR, WALL, FLOOR]
    assert (r["per_class"][FLOOR]["fn"], r["per_class"][CHAIR]["fp"]) == (1, 1)
    assert r["per_class"][WALL]["pq"] == pytest.approx(0.76)
    assert r["pq"] == pytest.approx(0.76 / 3)
    assert r["pq_th"] == 0.0 and r["pq_st"] == pytest.approx(0.76 / 2)


def test_stuff_split_into_instances_is_one_segment():
    gt = canvas()
    put(gt, slice(5, 10), slice(None), FLOOR)
    gt[1][:5] = 5  # GT wall ids are ignored too
    pred = canvas()
    put(pred, slice(5, 10), slice(None), FLOOR, 0)
    pred[1][:5, :5], pred[1][:5, 5:] = 1, 2  # wall split in two "instances"
    pred[1][5:, :3] = 8
    # each stuff class is one segment: wall IoU 1, floor IoU 1 (a split would give 0.5 < match)
    r = pq([pred], [gt])
    assert r["pq"] == pytest.approx(1.0) and r["per_class"][WALL]["tp"] == 1


def test_class_filter_or_drops_class_missing_in_prediction():
    # 20x20: GT wall top half, floor bottom half; prediction wall everywhere but 1 floor px (0.25 %)
    gt = canvas(20)
    put(gt, slice(10, 20), slice(None), FLOOR)
    pred = canvas(20)
    put(pred, 19, 19, FLOOR)
    r = pq([pred], [gt])
    # OR: floor pred 0.25 % -> dropped, its GT pixels become void;
    # wall: pred 399 - 199 on void + GT 200 - inter 200 -> union 200 -> IoU 1
    assert r["classes_scored"] == [WALL] and r["classes_dropped"] == [FLOOR]
    assert r["pq"] == pytest.approx(1.0) and np.isnan(r["pq_th"])
    r = pq([pred], [gt], class_filter="and")
    # AND keeps floor (GT 50 %): floor IoU 1/200 -> FN 1 + FP 1 -> 0; wall IoU 200/399 -> TP
    assert r["classes_scored"] == [WALL, FLOOR]
    assert r["pq"] == pytest.approx((0 + 200 / 399) / 2)


def test_class_filter_boundary_is_strictly_below_half_percent():
    ps = np.array([WALL] * 398 + [FLOOR] * 2)  # floor 2/400 = 0.5 % -> kept
    assert robust_classes(ps, ps, [WALL, FLOOR, BED]) == [WALL, FLOOR]
    ps[-1] = WALL  # 1/400 = 0.25 % -> dropped
    assert robust_classes(ps, ps, [WALL, FLOOR]) == [WALL]
    # OR vs AND: GT floor 50 %, pred floor 0.25 %
    gs = np.array([WALL] * 200 + [FLOOR] * 200)
    assert robust_classes(ps, gs, [WALL, FLOOR], rule="or") == [WALL]
    assert robust_classes(ps, gs, [WALL, FLOOR], rule="and") == [WALL, FLOOR]
    # a side with no pixel of the class does not test it (reference: only present labels are non-robust)
    ps = np.array([WALL] * 400)  # floor absent from the prediction, 50 % of the GT -> kept by OR
    assert robust_classes(ps, gs, [WALL, FLOOR], rule="or") == [WALL, FLOOR]
    assert robust_classes(gs, ps, [WALL, FLOOR], rule="or") == [WALL, FLOOR]  # prediction-only: kept too
    gs = np.array([WALL] * 399 + [FLOOR])  # ... but present with 0.25 % on the other side -> dropped
    assert robust_classes(ps, gs, [WALL, FLOOR], rule="or") == [WALL]
    assert robust_classes(ps, gs, [WALL, FLOOR], rule="and") == [WALL]  # AND: absent counts as under


def test_instance_spanning_two_views_is_one_scene_segment():
    gts = [canvas(), canvas()]
    for v in gts:
        put(v, slice(0, 4), slice(0, 4), CHAIR, 1)  # the same chair, 16 px per view
    consistent = [canvas(), canvas()]
    for v in consistent:
        put(v, slice(0, 4), slice(0, 4), CHAIR, 5)
    # consistent ids: one scene segment (32 px) -> 1 TP in PQ^scene, 2 TPs per view; all PQ 1
    assert pq(consistent, gts)["per_class"][CHAIR]["tp"] == 1
    assert pq_view(consistent, gts)["per_class"][CHAIR]["tp"] == 2
    inconsistent = [canvas(), canvas()]
    put(inconsistent[0], slice(0, 4), slice(0, 4), CHAIR, 1)
    put(inconsistent[1], slice(0, 4), slice(0, 4), CHAIR, 2)
    # scene: GT chair 32 px vs pred ids 1 and 2 of 16 px each: IoU 16/32 = 0.5, no match
    #   -> chair TP 0, FP 2, FN 1 -> PQ 0; wall PQ 1 -> scene PQ 0.5
    r = pq(inconsistent, gts)
    assert (r["per_class"][CHAIR]["fp"], r["per_class"][CHAIR]["fn"]) == (2, 1)
    assert r["pq"] == pytest.approx(0.5)
    # per view: each view matches its own chair (IoU 1) -> PQ 1
    rv = pq_view(inconsistent, gts)
    assert rv["pq"] == pytest.approx(1.0) and rv["per_view_pq"] == pytest.approx([1.0, 1.0])


def test_scene_pq_weighs_views_by_area():
    gts = [canvas(), canvas()]
    put(gts[0], slice(0, 4), slice(0, 4), CHAIR, 1)  # 16 px
    put(gts[1], slice(0, 2), slice(0, 4), CHAIR, 1)  # 8 px, same chair
    preds = [canvas(), canvas()]
    put(preds[0], slice(0, 4), slice(0, 4), CHAIR, 1)
    put(preds[1], slice(0, 2), slice(0, 4), CHAIR, 2)  # id switch in the smaller view
    # id 1: IoU 16/24 = 2/3 -> TP; id 2: IoU 8/24 -> FP; chair PQ = (2/3) / (1 + 0.5) = 4/9
    c = pq(preds, gts)["per_class"][CHAIR]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 1, 0)
    assert c["pq"] == pytest.approx(4 / 9)


def test_input_validation():
    gt = chair_scene()
    with pytest.raises(ValueError, match="disjoint"):
        panoptic_quality_scene([gt[0]], [gt[1]], [gt[0]], [gt[1]], [1, 3], [3])
    with pytest.raises(ValueError, match="do not match"):
        panoptic_quality_scene([gt[0][:5]], [gt[1]], [gt[0]], [gt[1]], THINGS, STUFF)
    with pytest.raises(ValueError, match="void"):
        pq([gt], [canvas(fill=0)])


# ----------------------------------------------------------------------------- mIoU


def test_miou_hand_case_and_predicted_void():
    gt = np.full((10, 10), WALL)
    gt[6:] = FLOOR  # wall 60, floor 40
    pred = np.full((10, 10), WALL)
    pred[7:] = FLOOR  # wall 70, floor 30
    r = mean_iou([pred], [gt], [WALL, FLOOR, CHAIR])
    # wall 60 / (60 + 70 - 60) = 60/70; floor 30 / (40 + 30 - 30) = 30/40; chair absent -> ignored
    assert r["per_class"] == pytest.approx({WALL: 60 / 70, FLOOR: 30 / 40})
    assert r["miou"] == pytest.approx((60 / 70 + 30 / 40) / 2)
    pred[6] = 0  # the 10 wrong pixels predicted void instead: wall 60/60, floor still 30/40
    gt_void = gt.copy()
    gt_void[0, :5] = 0  # GT void pixels are excluded: 5 wall px gone, wall stays 55/55
    r = mean_iou([pred], [gt_void], [WALL, FLOOR])
    assert r["miou"] == pytest.approx((1.0 + 0.75) / 2)
    assert mean_iou([gt], [gt], [WALL, FLOOR])["miou"] == pytest.approx(1.0)


def test_miou_and_filter_keeps_large_gt_class_and_ignores_tiny_class():
    gt = np.full((20, 20), WALL)
    gt[10:] = FLOOR
    gt[0, 0] = BED
    pred = np.full((20, 20), WALL)
    pred[0, 0], pred[19, 19] = BED, FLOOR
    # wall: GT 199, pred 398, inter 199 -> 0.5; floor: GT 200, pred 1 -> 1/200 (kept: AND rule)
    # bed: 1 px on both sides (0.25 % each) -> ignored despite IoU 1
    r = mean_iou([pred], [gt], [WALL, FLOOR, BED])
    assert r["classes_scored"] == [WALL, FLOOR]
    assert r["miou"] == pytest.approx((0.5 + 1 / 200) / 2)
    r = mean_iou([pred], [gt], [WALL, FLOOR, BED], class_filter=False)
    assert r["miou"] == pytest.approx((0.5 + 1 / 200 + 1.0) / 3)


def test_miou_accumulates_over_views():
    gts = [np.full((4, 4), WALL), np.full((4, 4), FLOOR)]
    preds = [np.full((4, 4), WALL), np.full((4, 4), WALL)]
    # one matrix: wall GT 16, pred 32, inter 16 -> 0.5; floor GT 16, pred 0 -> 0
    # (averaging per-view mIoUs would give (1 + 0) / 2 instead, from different classes)
    r = mean_iou(preds, gts, [WALL, FLOOR])
    assert r["per_class"] == pytest.approx({WALL: 0.5, FLOOR: 0.0})
    assert r["miou"] == pytest.approx(0.25)


def test_instance_ids_only_checked_on_thing_pixels():
    gt = chair_scene()
    pred = (gt[0].copy(), np.where(gt[0] == WALL, -1, gt[1]))  # -1 on stuff is fine
    assert pq([pred], [gt])["pq"] == pytest.approx(1.0)
    pred[1][0, 0] = -1  # on a chair pixel: invalid id
    with pytest.raises(ValueError, match="instance ids"):
        pq([pred], [gt])
