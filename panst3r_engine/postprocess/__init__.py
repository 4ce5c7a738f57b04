"""Panoptic post-processing of PanSt3R predictions (PanSt3R, arXiv 2506.21348; Mask2Former, arXiv 2112.01527).

``postprocess(pred_logits [Q, C], pred_masks per view [Q, h_v, w_v], true_shapes [V, 2], method)``
returns a :class:`PanopticResult` whose ids are shared across views (same id = same instance).
Methods: 'standard_v1', 'standard_v2' (the checkpoint default) and 'qubo'.
:func:`.from_raw.postprocess_raw` does the same for the arrays of a saved ``raw.npz``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .common import (
    ArrayLike,
    Checkpoints,
    PanopticResult,
    ProgressFn,
    class_probs,
    lazy_mask_probs,
    shapes_list,
)
from .qubo import QuboConfig, qubo_inference
from .standard import STANDARD_V1, STANDARD_V2, StandardConfig, standard_inference

METHODS = ("standard_v1", "standard_v2", "qubo")

__all__ = ["METHODS", "PanopticResult", "QuboConfig", "StandardConfig", "postprocess"]


def postprocess(
    pred_logits: ArrayLike,
    pred_masks: Sequence[ArrayLike] | ArrayLike,
    true_shapes: ArrayLike | Sequence[Sequence[int]],
    method: str = "standard_v2",
    seed: int = 0,
    qubo: QuboConfig | None = None,
    progress: ProgressFn | None = None,
) -> PanopticResult:
    """Class logits [Q, C] + per-view mask logits [Q, h_v, w_v] -> panoptic maps at true_shapes [V, 2].

    ``seed`` only matters for 'qubo' (its local-search restarts); ``qubo`` overrides its config:
    ``QuboConfig(tau=0.0)`` exact weights, ``tau > 0`` fast weights with a bounded error,
    ``tau=None`` (default) exact for small inputs, fast beyond (see ``qubo.resolve_tau``).
    ``progress``, if given, is called as ``progress("postprocess", fraction, message)`` from inside
    the long loops (at most every 50 ms, fractions non-decreasing, 1.0 at the end); whatever it
    raises (``Cancelled``) stops the run there. It never changes the result.

    Views are streamed: mask probabilities are computed per view when a pass reads it, so the memory held
    is one view's probabilities plus per-view results, whatever the number of views (``pred_masks`` may be
    a disk-backed sequence read one view at a time).
    """
    shapes = shapes_list(true_shapes)
    cls = class_probs(pred_logits)
    ck = Checkpoints(progress)
    if method == "standard_v1":
        return standard_inference(cls, lazy_mask_probs(pred_masks, shapes), shapes, STANDARD_V1, ck)
    if method == "standard_v2":
        return standard_inference(cls, lazy_mask_probs(pred_masks, shapes), shapes, STANDARD_V2, ck)
    if method == "qubo":
        probs = lazy_mask_probs(pred_masks, shapes, low_res=True)
        return qubo_inference(cls, probs, shapes, seed=seed, cfg=qubo or QuboConfig(), ck=ck)
    raise ValueError(f"unknown post-processing method {method!r}; expected one of {METHODS}")
