"""Post-processing of a saved ``raw.npz``: what ``python -m panst3r_engine postprocess`` writes.

The raw file keeps each view's mask logits at half resolution inside a padded
array; this crops them, runs :func:`postprocess`, and pads the per-view maps
back into one ``panoptic.npz``-shaped dict, so the command stays a thin shell.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def postprocess_raw(raw: Mapping[str, np.ndarray], method: str = "standard_v2", seed: int = 0) -> dict:
    """``pred_logits``, ``pred_masks``, ``true_shape`` -> pan and conf padded to the largest view, plus segments."""
    from panst3r_engine.postprocess import postprocess

    shapes = np.asarray(raw["true_shape"]).astype(int)
    masks = [raw["pred_masks"][v, :, : h // 2, : w // 2] for v, (h, w) in enumerate(shapes)]
    result = postprocess(raw["pred_logits"], masks, shapes, method=method, seed=seed)
    pan, conf = _padded(result.pan, shapes, np.int32), _padded(result.conf, shapes, np.float32)
    return {
        "pan": pan,
        "conf": conf,
        "true_shape": shapes.astype(np.int32),
        "segment_ids": np.array([s["id"] for s in result.segments], dtype=np.int32),
        "segment_classes": np.array([s["category_id"] for s in result.segments], dtype=np.int32),
    }


def _padded(maps, shapes: np.ndarray, dtype) -> np.ndarray:
    """Per-view maps of different sizes in one [V, H_max, W_max] array, zero beyond each view."""
    out = np.zeros((len(shapes), shapes[:, 0].max(), shapes[:, 1].max()), dtype=dtype)
    for v, (h, w) in enumerate(shapes):
        out[v, :h, :w] = maps[v]
    return out
