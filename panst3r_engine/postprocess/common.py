"""Shared preamble of every panoptic post-processing (PanSt3R, arXiv 2506.21348, panoptic inference).

Shapes: Q queries, C classes, V views, mask logits per view [Q, h_v, w_v] (stride 2),
output size per view (H_v, W_v), padded size (H_max, W_max) = per-axis maxima.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray
ProgressFn = Callable[[str, float, str], None]
PROGRESS_STAGE = "postprocess"
CHECK_INTERVAL = 0.05  # seconds between two calls of the progress callable (at most one per interval)


@dataclass
class _Clock:
    """State shared by a run's checkpoints: the callable, the last call time and fraction."""

    fn: ProgressFn | None
    interval: float
    last: float = float("-inf")
    done: float = 0.0


class Checkpoints:
    """Progress (and so cancellation) checkpoints inside the long post-processing loops.

    ``tick(f, message)`` calls ``progress("postprocess", fraction, message)`` with ``f`` in [0, 1]
    mapped into this object's sub-range, at most once every ``interval`` seconds (the first tick
    and ``force`` ticks always); fractions never go backwards. The callable may raise (a
    ``Progress`` raises ``Cancelled`` once its cancel event is set): the run stops at that tick.
    ``part(lo, hi)`` gives the checkpoints of a sub-step. Without a callable nothing happens;
    checkpoints never change a result.
    """

    def __init__(self, progress: ProgressFn | None = None, interval: float = CHECK_INTERVAL) -> None:
        self._clock = _Clock(progress, interval)
        self._lo, self._hi = 0.0, 1.0

    def part(self, lo: float, hi: float) -> Checkpoints:
        """Checkpoints whose [0, 1] covers [lo, hi] of this one's range."""
        sub = Checkpoints.__new__(Checkpoints)
        sub._clock, span = self._clock, self._hi - self._lo
        sub._lo, sub._hi = self._lo + span * lo, self._lo + span * hi
        return sub

    def tick(self, fraction: float, message: str = "", force: bool = False) -> None:
        """Report ``fraction`` in [0, 1] of this range (throttled unless ``force``)."""
        clock = self._clock
        if clock.fn is None:
            return
        now = time.perf_counter()
        if not force and now - clock.last < clock.interval:
            return
        f = self._lo + (self._hi - self._lo) * min(max(fraction, 0.0), 1.0)
        clock.last, clock.done = now, max(clock.done, min(f, 1.0))
        clock.fn(PROGRESS_STAGE, clock.done, message)


def checkpoints_or_none(ck: Checkpoints | None) -> Checkpoints:
    """``ck``, or checkpoints that do nothing."""
    return ck if ck is not None else Checkpoints()


@dataclass
class PanopticResult:
    """Post-processing output.

    pan: per view int32 [H_v, W_v], 0 = void, ids 1..S shared across views.
    conf: per view float32 [H_v, W_v] per-pixel confidence.
    segments: one dict per id (ascending): id, query_id, query, category_id, score, area, ...
    info: method details (QUBO: selected queries, energy, weights tau, energy error bound).
    """

    pan: list[np.ndarray]
    conf: list[np.ndarray]
    segments: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def as_tensor(x: ArrayLike) -> torch.Tensor:
    """float32 CPU tensor from a numpy array or tensor (no copy when already so)."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.detach().to(device="cpu", dtype=torch.float32)


def shapes_list(true_shapes: ArrayLike | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """[V, 2] (H, W) -> list of V int pairs."""
    arr = np.asarray(true_shapes.cpu() if isinstance(true_shapes, torch.Tensor) else true_shapes)
    return [(int(h), int(w)) for h, w in arr.reshape(-1, 2)]


def padded_size(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(H_max, W_max) of the zero-padded stack."""
    return max(h for h, _ in shapes), max(w for _, w in shapes)


def class_probs(pred_logits: ArrayLike) -> torch.Tensor:
    """[Q, C] logits -> [Q, C] sigmoid probabilities (label_mode 'sigmoid')."""
    return torch.sigmoid(as_tensor(pred_logits))


def low_res_probs(mask_logits: ArrayLike) -> torch.Tensor:
    """[Q, h, w] (or [1, Q, h, w]) mask logits -> [Q, h, w] sigmoid probabilities."""
    t = as_tensor(mask_logits)
    return torch.sigmoid(t[0] if t.dim() == 4 else t)


def upsample(probs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """[K, h, w] probabilities -> [K, H, W], bilinear, align_corners=False (per channel)."""
    return F.interpolate(probs[None], size=shape, mode="bilinear", align_corners=False)[0]


def view_mask_probs(mask_logits: ArrayLike, shape: tuple[int, int]) -> torch.Tensor:
    """[Q, h, w] (or [1, Q, h, w]) logits -> [Q, H, W] probabilities: sigmoid, then resize."""
    return upsample(low_res_probs(mask_logits), shape)


def mask_probs(
    pred_masks: Sequence[ArrayLike] | ArrayLike, shapes: Sequence[tuple[int, int]], ck: Checkpoints | None = None
) -> list[torch.Tensor]:
    """Per view [Q, h_v, w_v] logits (list, or one [V, Q, h, w] array) -> list of [Q, H_v, W_v] probs."""
    _check_views(pred_masks, shapes)
    ck = checkpoints_or_none(ck)
    out = []
    for v, (m, s) in enumerate(zip(pred_masks, shapes)):
        ck.tick(v / len(shapes), f"mask probabilities: view {v + 1}/{len(shapes)}")
        out.append(view_mask_probs(m, s))
    return out


class LazyViews(Sequence[torch.Tensor]):
    """Per-view values computed when read (``fn(view)``), never held together: post-processing streams views.

    Reading a view twice computes it twice; the stages that need a view in several passes re-read it.
    """

    def __init__(self, fn: Callable[[int], torch.Tensor], count: int) -> None:
        self._fn, self._count = fn, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, view: int) -> torch.Tensor:  # type: ignore[override]
        if not 0 <= view < self._count:
            raise IndexError(f"view {view} is outside 0..{self._count - 1}")
        return self._fn(view)


def lazy_mask_probs(
    pred_masks: Sequence[ArrayLike] | ArrayLike, shapes: Sequence[tuple[int, int]], low_res: bool = False
) -> LazyViews:
    """As :func:`mask_probs` (or :func:`mask_probs_low_res`), one view at a time when read.

    ``pred_masks`` may itself be lazy (a disk-backed store): then no stage holds more than one view's masks.
    """
    _check_views(pred_masks, shapes)
    if low_res:
        return LazyViews(lambda v: low_res_probs(pred_masks[v]), len(shapes))
    return LazyViews(lambda v: view_mask_probs(pred_masks[v], shapes[v]), len(shapes))


def _check_views(pred_masks: Sequence[ArrayLike] | ArrayLike, shapes: Sequence[tuple[int, int]]) -> None:
    if len(pred_masks) != len(shapes):
        raise ValueError(f"{len(pred_masks)} mask views but {len(shapes)} true shapes")


def mask_probs_low_res(
    pred_masks: Sequence[ArrayLike] | ArrayLike, shapes: Sequence[tuple[int, int]], ck: Checkpoints | None = None
) -> list[torch.Tensor]:
    """Per view [Q, h_v, w_v] sigmoid probabilities at the prediction stride (resized later)."""
    _check_views(pred_masks, shapes)
    ck = checkpoints_or_none(ck)
    out = []
    for v, m in enumerate(pred_masks):
        ck.tick(v / len(shapes), f"mask probabilities: view {v + 1}/{len(shapes)}")
        out.append(low_res_probs(m))
    return out


def pad_views(views: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """List of [..., H_v, W_v] -> [V, ..., H_max, W_max], zero-padded bottom/right."""
    out = []
    for v in views:
        h, w = v.shape[-2:]
        out.append(F.pad(v, (0, size[1] - w, 0, size[0] - h)))
    return torch.stack(out)


def crop_views(padded: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """[V, H_max, W_max] -> list of [H_v, W_v] (top-left crops)."""
    return [padded[v, :h, :w] for v, (h, w) in enumerate(shapes)]


def empty_result(shapes: Sequence[tuple[int, int]], conf_value: float) -> PanopticResult:
    """All-void result: pan 0 everywhere, conf = conf_value."""
    pan = [np.zeros(s, np.int32) for s in shapes]
    conf = [np.full(s, conf_value, np.float32) for s in shapes]
    return PanopticResult(pan=pan, conf=conf, segments=[])
