"""``raw.npz``: the network's raw outputs, so post-processing can be re-run alone.

Arrays (views in input order; views smaller than the largest are zero-padded
at the bottom/right, ``true_shape`` gives each view's valid size):

=================  ===================  ==============================================
name               shape                meaning
=================  ===================  ==============================================
pointmaps_raw      [V, H, W, 7]         head output before activation
pts3d              [V, H, W, 3]         global points (reference camera frame)
pts3d_local        [V, H, W, 3]         points in each view's own camera frame
conf               [V, H, W]            ``1 + exp(c)``
pred_logits        [Q, C]               class logits
pred_masks         [V, Q, H/2, W/2]     mask logits (pre-sigmoid, all queries)
out_queries        [Q, hidden]          final query states
true_shape         [V, 2] int32         (H, W) of every view
keyframes          [K] int32            keyframe indices, reference first
class_names        [C] str              the vocabulary, column order of pred_logits
=================  ===================  ==============================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.spec import read_npz
from panst3r_engine.model.inference import RawOutputs, activate_pointmaps

REQUIRED = ("pred_logits", "pred_masks", "true_shape")
RAW_INFLATION = 8  # raw.npz is written stored (np.savez); a compressed one may inflate this much, no more


def _pad_stack(tensors: list[torch.Tensor], spatial_dims: tuple[int, int]) -> np.ndarray:
    """Stack tensors whose ``spatial_dims`` may differ, zero-padding to the largest."""
    a, b = spatial_dims
    size_a = max(t.shape[a] for t in tensors)
    size_b = max(t.shape[b] for t in tensors)
    out = np.zeros(
        (len(tensors),) + tuple(size_a if d == a else size_b if d == b else s for d, s in enumerate(tensors[0].shape)),
        dtype=np.float32,
    )
    for i, t in enumerate(tensors):
        index = [i] + [slice(0, s) for s in t.shape]
        out[tuple(index)] = t.numpy()
    return out


def raw_arrays(outputs: RawOutputs, class_names: list[str]) -> dict[str, np.ndarray]:
    pointmaps = _pad_stack(outputs.pointmaps_raw, (0, 1))
    pts3d, pts3d_local, conf = activate_pointmaps(torch.from_numpy(pointmaps))
    return {
        "pointmaps_raw": pointmaps,
        "pts3d": pts3d.numpy(),
        "pts3d_local": pts3d_local.numpy(),
        "conf": conf.numpy(),
        "pred_logits": outputs.pred_logits.numpy().astype(np.float32),
        "pred_masks": _pad_stack(outputs.pred_masks, (1, 2)),
        "out_queries": outputs.out_queries.numpy().astype(np.float32),
        "true_shape": np.asarray(outputs.true_shapes, dtype=np.int32).reshape(-1, 2),
        "keyframes": np.asarray(outputs.keyframes, dtype=np.int32),
        "class_names": np.asarray(class_names, dtype=str),
    }


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write an ``.npz`` (``raw.npz``, ``panoptic.npz``) atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_raw(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``raw.npz``, checking the arrays post-processing needs; its sizes are checked before inflating."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path} does not exist; give the raw.npz written by 'run --save-raw'")
    try:
        arrays = read_npz(path, RAW_INFLATION * path.stat().st_size + (1 << 20))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}); give the raw.npz written by 'run --save-raw'") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}; it is not a raw.npz written by 'run --save-raw'")
    return arrays
