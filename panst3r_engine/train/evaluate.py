"""Scoring a checkpoint on held-out scenes, as ``eval run`` scores it, plus a majority-class baseline.

The checkpoint goes through the real pipeline (:func:`panst3r_engine.eval.run.run_evaluation`,
input-views protocol), so a trained ``final.pth`` is scored exactly as a user's ``eval run`` would
score it. PQ is PQ^scene (one segment = one instance across all views); ``pq_all`` skips the
reference 0.5 % class filter, which otherwise forgives predictions that ignore most classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from panst3r_engine.eval.dataset import SceneDataset
from panst3r_engine.eval.metrics import mean_iou, panoptic_quality_scene


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    datasets: Sequence[str | os.PathLike],
    embeddings: str,
    out_dir: str | os.PathLike,
    resize: str = "none",
    device: str = "cpu",
) -> dict:
    """Mean PQ^scene (filtered and unfiltered) and mIoU of ``checkpoint`` over ``datasets``."""
    from panst3r_engine.eval.run import EvalOptions, run_evaluation

    rows = []
    for i, dataset in enumerate(datasets):
        opts = EvalOptions(
            weights=str(checkpoint),
            vocab_embeddings=embeddings,
            device=device,
            resize=resize,
            conf_threshold=1.0,
            overwrite=True,
        )
        rows.append(run_evaluation(dataset, Path(out_dir) / f"scene_{i}", opts)["panoptic"])
    return {
        "pq": _mean([r["pq"] for r in rows]),
        "pq_all": _mean([r["unfiltered"]["pq"] for r in rows]),
        "miou": _mean([r["miou"] for r in rows]),
    }


def majority_class(scenes: Sequence[SceneDataset]) -> str:
    """The class name covering most labelled pixels of the training scenes."""
    counts: dict[str, int] = {}
    for scene in scenes:
        names = {c.id: c.name for c in scene.classes}
        for view in scene.views:
            ids, n = np.unique(view.semantic, return_counts=True)
            for cid, count in zip(ids.tolist(), n.tolist()):
                if cid in names:
                    counts[names[cid]] = counts.get(names[cid], 0) + count
    return max(counts, key=counts.get)


def majority_baseline(train: Sequence[SceneDataset], held_out: Sequence[SceneDataset]) -> dict:
    """Scores of painting every pixel of every held-out view as one segment of the majority class."""
    name = majority_class(train)
    rows = []
    for scene in held_out:
        by_name = {c.name: c.id for c in scene.classes}
        gt_sem = [v.semantic.astype(np.int64) for v in scene.views]
        gt_inst = [v.instance.astype(np.int64) for v in scene.views]
        pred_sem = [np.full_like(s, by_name.get(name, 0)) for s in gt_sem]
        pred_inst = [np.ones_like(s) for s in gt_sem]
        things, stuff = scene.thing_classes, scene.stuff_classes
        pq = panoptic_quality_scene(pred_sem, pred_inst, gt_sem, gt_inst, things, stuff)
        pq_all = panoptic_quality_scene(pred_sem, pred_inst, gt_sem, gt_inst, things, stuff, class_filter=None)
        miou = mean_iou(pred_sem, gt_sem, [c.id for c in scene.classes])
        rows.append({"pq": pq["pq"], "pq_all": pq_all["pq"], "miou": miou["miou"]})
    return {key: _mean([r[key] for r in rows]) for key in ("pq", "pq_all", "miou")}
