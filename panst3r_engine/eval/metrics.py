"""Panoptic quality over a whole scene (PQ^scene) and mIoU, Panoptic Lifting protocol.

PQ^scene is COCO panoptic quality computed as if all test views of a scene
were one big image: a thing segment is a (class, instance id) pair over *all*
views, so an object with different ids in different views splits into several
predicted segments. Steps (Panoptic Lifting's reference evaluation):

1. pixels whose GT semantic label is 0 (void) are removed from both sides;
2. views are concatenated, ids are global for the scene;
3. listed classes absent from both sides are dropped, and so are non-robust
   classes: present in the prediction with under 0.5 % of its pixels OR
   present in the GT with under 0.5 % of its pixels (fractions of the pixels
   left after step 1). A side where the class has no pixel at all does not
   test it: a class only in the GT (missed) or only in the prediction
   (hallucinated) stays and scores 0. Pixels of dropped or unknown classes
   (neither thing nor stuff) become *void* on both sides;
4. stuff classes get instance id 0 (one segment per class);
5. same-class segments match when IoU > 0.5, where the union leaves out
   predicted pixels on GT void and GT pixels on predicted void;
6. an unmatched GT segment is no FN if more than half of it is predicted void;
   an unmatched prediction is no FP if more than half of it lies on GT void;
7. PQ_c = sum IoU / (TP + FP/2 + FN/2); the scene score is the mean over the
   surviving classes (things and stuff together; also per group). A surviving
   class left with no TP, FP or FN (all its segments forgiven in step 6) stays
   in the mean with PQ = SQ = RQ = 0, as the reference does; COCO panopticapi
   would leave such a class out of the mean instead.

Inputs are lists of per-view integer arrays (any shape, same per view).
Scores are fractions in [0, 1]; a group with no surviving class scores NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

VOID = -1
MIN_CLASS_FRACTION = 0.005
_BASE = np.int64(2**31)  # segment key = class * _BASE + instance
FilterRule = Literal["or", "and"] | None


def _concat(views: Sequence[np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and join per-view arrays; also return the view index of every pixel. ``[N]``, ``[N]``."""
    arrs = [np.asarray(v).reshape(-1) for v in views]
    if not arrs:
        raise ValueError(f"{name}: no views")
    view = np.concatenate([np.full(a.size, i, np.int32) for i, a in enumerate(arrs)])
    return np.concatenate(arrs).astype(np.int64), view


def _check_views(*named: tuple[str, Sequence[np.ndarray]]) -> None:
    """All lists have the same length and per-view shapes."""
    lists = [(n, [np.shape(v) for v in vs]) for n, vs in named]
    ref_name, ref = lists[0]
    for n, shapes in lists[1:]:
        if shapes != ref:
            raise ValueError(f"{n} views {shapes} do not match {ref_name} views {ref}")


def _flatten_scene(pred_sem, pred_inst, gt_sem, gt_inst) -> dict[str, np.ndarray]:
    """Concatenated pixel arrays with GT-void pixels removed (keys ps, pi, gs, gi, view)."""
    _check_views(("gt_sem", gt_sem), ("pred_sem", pred_sem), ("pred_inst", pred_inst), ("gt_inst", gt_inst))
    gs, view = _concat(gt_sem, "gt_sem")
    keep = gs != 0
    if not keep.any():
        raise ValueError("every GT pixel is void (semantic 0): nothing to score")
    out = {
        "gs": gs,
        "view": view,
        "ps": _concat(pred_sem, "pred_sem")[0],
        "pi": _concat(pred_inst, "pred_inst")[0],
        "gi": _concat(gt_inst, "gt_inst")[0],
    }
    return {k: v[keep] for k, v in out.items()}


def robust_classes(
    pred_sem: np.ndarray,
    gt_sem: np.ndarray,
    classes: Iterable[int],
    rule: FilterRule = "or",
    min_fraction: float = MIN_CLASS_FRACTION,
) -> list[int]:
    """Classes kept for scoring, from flat non-void pixel labels ``[N]``.

    A class absent from both sides is always dropped. ``rule="or"`` (PQ,
    Panoptic Lifting's non-robust classes) drops a class that is *present* on
    a side with under ``min_fraction`` of the pixels there; a side without any
    pixel of the class does not test it, so a class that only the GT has (or
    only the prediction has) is kept. ``"and"`` (mIoU-style) drops a class only
    when under ``min_fraction`` on both sides (absent counts as under);
    ``None`` keeps all present classes.
    """
    n = gt_sem.size
    kept = []
    for c in sorted(set(int(c) for c in classes)):
        fp, fg = np.count_nonzero(pred_sem == c) / n, np.count_nonzero(gt_sem == c) / n
        if fp == 0 and fg == 0:
            continue
        if rule == "or" and (0 < fp < min_fraction or 0 < fg < min_fraction):
            continue
        if rule == "and" and fp < min_fraction and fg < min_fraction:
            continue
        kept.append(c)
    return kept


def _segment_keys(sem: np.ndarray, inst: np.ndarray, things: set[int], stuff: set[int]) -> np.ndarray:
    """Segment key per pixel: class * 2**31 + id (id 0 for stuff); VOID for other classes. ``[N]``.

    Instance ids matter only on thing pixels (any value elsewhere, e.g. -1).
    """
    is_thing = np.isin(sem, list(things))
    is_stuff = np.isin(sem, list(stuff))
    ids = inst[is_thing]
    if ids.size and (ids.min() < 0 or ids.max() >= _BASE):
        raise ValueError("thing instance ids must lie in [0, 2**31)")
    keys = sem * _BASE + np.where(is_thing, inst, 0)
    return np.where(is_thing | is_stuff, keys, VOID)


def _void_overlap(uniq: np.ndarray, idx: np.ndarray, other_void: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Pixels of each segment in ``uniq`` that fall on the other side's void. ``[len(uniq)]``."""
    out = np.zeros(uniq.size, np.int64)
    np.add.at(out, idx[other_void], cnt[other_void])
    return out


def pq_counts(pred_keys: np.ndarray, gt_keys: np.ndarray, class_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-class ``iou_sum, tp, fp, fn`` (arrays ``[C]`` over ``class_ids``) for flat segment keys ``[N]``."""
    cls = np.asarray(class_ids, np.int64)
    pu, pinv = np.unique(pred_keys, return_inverse=True)
    gu, ginv = np.unique(gt_keys, return_inverse=True)
    parea, garea = np.bincount(pinv, minlength=pu.size), np.bincount(ginv, minlength=gu.size)
    pairs, inter = np.unique(pinv.astype(np.int64) * gu.size + ginv, return_counts=True)
    pi, gi = pairs // gu.size, pairs % gu.size
    p_void, g_void = pu[pi] == VOID, gu[gi] == VOID
    pred_on_void = _void_overlap(pu, pi, g_void, inter)
    gt_on_void = _void_overlap(gu, gi, p_void, inter)

    cand = ~p_void & ~g_void & (pu[pi] // _BASE == gu[gi] // _BASE)
    pi, gi, inter = pi[cand], gi[cand], inter[cand]
    union = parea[pi] - pred_on_void[pi] + garea[gi] - gt_on_void[gi] - inter
    iou = inter / union
    hit = iou > 0.5

    out = {k: np.zeros(cls.size, np.float64 if k == "iou_sum" else np.int64) for k in ("iou_sum", "tp", "fp", "fn")}
    hit_cls = np.searchsorted(cls, gu[gi[hit]] // _BASE)
    np.add.at(out["iou_sum"], hit_cls, iou[hit])
    np.add.at(out["tp"], hit_cls, 1)

    for keys, area, on_void, matched, name in (
        (gu, garea, gt_on_void, gi[hit], "fn"),
        (pu, parea, pred_on_void, pi[hit], "fp"),
    ):
        miss = keys != VOID
        miss[matched] = False
        miss &= on_void / area <= 0.5  # forgiven when more than half lies on the other side's void
        np.add.at(out[name], np.searchsorted(cls, keys[miss] // _BASE), 1)
    return out


def _class_scores(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-class pq, sq, rq from counts (0 where undefined, as COCO does for SQ)."""
    tp = c["tp"].astype(np.float64)
    den = tp + 0.5 * c["fp"] + 0.5 * c["fn"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pq = np.where(den > 0, c["iou_sum"] / den, 0.0)
        sq = np.where(tp > 0, c["iou_sum"] / tp, 0.0)
        rq = np.where(den > 0, tp / den, 0.0)
    return {"pq": pq, "sq": sq, "rq": rq}


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def summarise_pq(counts: dict[str, np.ndarray], class_ids: Sequence[int], things: Iterable[int]) -> dict:
    """Scene dict: pq/sq/rq overall, ``_th`` and ``_st`` means, and ``per_class`` details."""
    scores = _class_scores(counts)
    is_th = np.isin(np.asarray(class_ids, np.int64), list(things))
    out: dict = {}
    for m, v in scores.items():
        out[m], out[f"{m}_th"], out[f"{m}_st"] = _mean(v), _mean(v[is_th]), _mean(v[~is_th])
    out["per_class"] = {
        int(c): {
            **{m: float(v[i]) for m, v in scores.items()},
            **{k: (float if k == "iou_sum" else int)(counts[k][i]) for k in counts},
            "thing": bool(is_th[i]),
        }
        for i, c in enumerate(class_ids)
    }
    return out


def _prepare(pred_sem, pred_inst, gt_sem, gt_inst, thing_classes, stuff_classes, class_filter):
    """Flattened scene, surviving classes and segment keys (the shared part of both PQ variants)."""
    things, stuff = {int(c) for c in thing_classes}, {int(c) for c in stuff_classes}
    if things & stuff or 0 in things | stuff:
        raise ValueError("thing and stuff classes must be disjoint and must not contain 0 (void)")
    px = _flatten_scene(pred_sem, pred_inst, gt_sem, gt_inst)
    present = robust_classes(px["ps"], px["gs"], things | stuff, rule=None)
    kept = robust_classes(px["ps"], px["gs"], things | stuff, rule=class_filter)
    th, st = things & set(kept), stuff & set(kept)
    px["pk"] = _segment_keys(px["ps"], px["pi"], th, st)
    px["gk"] = _segment_keys(px["gs"], px["gi"], th, st)
    meta = {"classes_scored": kept, "classes_dropped": sorted(set(present) - set(kept))}
    return px, kept, things, meta


def panoptic_quality_scene(
    pred_sem: Sequence[np.ndarray],
    pred_inst: Sequence[np.ndarray],
    gt_sem: Sequence[np.ndarray],
    gt_inst: Sequence[np.ndarray],
    thing_classes: Iterable[int],
    stuff_classes: Iterable[int],
    class_filter: FilterRule = "or",
) -> dict:
    """PQ^scene of one scene: views concatenated, segments matched across the whole scene.

    Per-view arrays ``[H, W]`` (or any shape, equal within a view); semantic 0
    is void. Returns pq, sq, rq, pq_th, sq_th, rq_th, pq_st, sq_st, rq_st,
    per_class ({class: pq, sq, rq, iou_sum, tp, fp, fn, thing}),
    classes_scored and classes_dropped (present but filtered out).
    ``class_filter`` other than "or" departs from the reference protocol.
    """
    px, kept, things, meta = _prepare(pred_sem, pred_inst, gt_sem, gt_inst, thing_classes, stuff_classes, class_filter)
    counts = pq_counts(px["pk"], px["gk"], kept)
    return {**summarise_pq(counts, kept, things), **meta}


def panoptic_quality_per_view(
    pred_sem: Sequence[np.ndarray],
    pred_inst: Sequence[np.ndarray],
    gt_sem: Sequence[np.ndarray],
    gt_inst: Sequence[np.ndarray],
    thing_classes: Iterable[int],
    stuff_classes: Iterable[int],
    class_filter: FilterRule = "or",
) -> dict:
    """Image-wise PQ for comparison: segments matched inside each view only.

    Same void handling and the same scene-level class filter as
    :func:`panoptic_quality_scene`; TP/FP/FN/IoU are summed over views (COCO
    dataset style) before the per-class scores. Also returns ``per_view_pq``:
    each view's mean PQ over the classes with a TP, FP or FN there (NaN if none).
    """
    px, kept, things, meta = _prepare(pred_sem, pred_inst, gt_sem, gt_inst, thing_classes, stuff_classes, class_filter)
    total = {k: np.zeros(len(kept), np.float64 if k == "iou_sum" else np.int64) for k in ("iou_sum", "tp", "fp", "fn")}
    per_view = []
    for v in range(len(gt_sem)):
        sel = px["view"] == v
        c = pq_counts(px["pk"][sel], px["gk"][sel], kept)
        for k in total:
            total[k] += c[k]
        seen = (c["tp"] + c["fp"] + c["fn"]) > 0
        per_view.append(_mean(_class_scores(c)["pq"][seen]))
    return {**summarise_pq(total, kept, things), **meta, "per_view_pq": per_view}


def mean_iou(
    pred_sem: Sequence[np.ndarray],
    gt_sem: Sequence[np.ndarray],
    classes: Iterable[int],
    class_filter: bool = True,
    min_fraction: float = MIN_CLASS_FRACTION,
) -> dict:
    """Scene mIoU from one confusion matrix over all views (Panoptic Lifting ``calculate_iou_folders``).

    GT-void pixels (0) are excluded, as are GT pixels of classes outside
    ``classes``; predictions outside ``classes`` count as void (wrong for every
    class). IoU_c = diag / (row + col - diag). With ``class_filter`` a class
    under ``min_fraction`` on both axes is ignored; 0/0 classes are ignored.
    Void itself is never scored. Returns miou, per_class ({class: iou}) and
    classes_scored; miou is NaN when no class is left.
    """
    _check_views(("gt_sem", gt_sem), ("pred_sem", pred_sem))
    labels = np.array(sorted({int(c) for c in classes} - {0}), np.int64)
    gs, _ = _concat(gt_sem, "gt_sem")
    ps, _ = _concat(pred_sem, "pred_sem")
    keep = np.isin(gs, labels)
    if not keep.any():
        raise ValueError("no GT pixel of a scored class: nothing to score")
    g = np.searchsorted(labels, gs[keep]) + 1  # 0 = void
    p = np.where(np.isin(ps[keep], labels), np.searchsorted(labels, ps[keep]) + 1, 0)
    n = labels.size + 1
    conf = np.bincount(g * n + p, minlength=n * n).reshape(n, n)[1:, 1:]
    row = np.bincount(g, minlength=n)[1:]  # GT pixels per class, incl. those predicted void
    col = conf.sum(0)
    diag = np.diag(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (row + col - diag)
    if class_filter:
        total = keep.sum()
        iou = np.where((row / total < min_fraction) & (col / total < min_fraction), np.nan, iou)
    scored = ~np.isnan(iou)
    return {
        "miou": float(iou[scored].mean()) if scored.any() else float("nan"),
        "per_class": {int(c): float(iou[i]) for i, c in enumerate(labels) if scored[i]},
        "classes_scored": [int(c) for c in labels[scored]],
    }
