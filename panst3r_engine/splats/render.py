"""One ``render()`` interface, two backends: gsplat's CUDA kernels on a GPU, our pure-torch rasteriser elsewhere.

gsplat's kernel wrappers have no CPU path (they try a JIT build and fail), so CPU tensors never reach them.
``auto`` picks ``gsplat`` only when the tensors are on CUDA and ``gsplat.cuda._backend._C`` loads; the
environment variable ``PANST3R_SPLAT_BACKEND=torch|gsplat`` forces one. Both are called with ``packed=False``
so ``meta`` has the same [C, N, ...] layout for ``DefaultStrategy``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from panst3r_engine.config import ENV_SPLAT_BACKEND, splat_backend
from panst3r_engine.splats import _torch_render
from panst3r_engine.splats.labels import labels_from_ids, segment_class_table
from panst3r_engine.splats.model import SplatModel

BACKEND_ENV = ENV_SPLAT_BACKEND
BACKENDS = ("auto", "torch", "gsplat")
MAX_SIDE = 8192  # refuse absurd render sizes (the HTTP service forwards user input)
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def gsplat_cuda_available() -> bool:
    """True when CUDA is usable and gsplat's compiled kernels load (the first call may JIT-build them)."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:  # noqa: BLE001 - any build/import failure means "no kernels"
        log.warning("gsplat CUDA kernels unavailable (%s); using the torch rasteriser", exc)
        return False
    return _C is not None


def choose_backend(device: torch.device | str, backend: str = "auto") -> str:
    """'gsplat' or 'torch' for tensors on ``device``; ``backend='gsplat'`` without usable kernels raises."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = splat_backend()
        if backend not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS}, got {backend!r}")
    on_cuda = torch.device(device).type == "cuda"
    if backend == "gsplat" and not (on_cuda and gsplat_cuda_available()):
        raise RuntimeError(
            "the gsplat backend needs CUDA tensors and gsplat's compiled CUDA kernels; "
            "use backend='torch' (or 'auto') on this machine"
        )
    if backend == "auto":
        backend = "gsplat" if on_cuda and gsplat_cuda_available() else "torch"
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backend: str = "auto",
    **kwargs: Any,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``gsplat.rasterization(..., packed=False)`` semantics on the chosen backend; see ``_torch_render``.

    ``max_weight_ids=True`` (labels by the max-weight Gaussian) is only available on the torch backend.
    """
    chosen = choose_backend(means.device, backend)
    log.debug("rasterize: %s backend, %d Gaussians, %dx%d", chosen, means.shape[0], width, height)
    if chosen == "torch":
        return _torch_render.rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    if kwargs.pop("max_weight_ids", False):
        raise ValueError("max_weight_ids is only available on the torch backend")
    from gsplat import rasterization

    out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, packed=False, **kwargs
    )
    return out, alphas, meta


@dataclass
class RenderOutput:
    """A rendered view: colour, coverage, expected depth and panoptic labels (numpy, on the CPU)."""

    rgb: np.ndarray  # [H, W, 3] float32 in 0-1, background included
    alpha: np.ndarray  # [H, W] float32 accumulated opacity
    depth: np.ndarray  # [H, W] float32 expected camera-z depth (0 where nothing is hit)
    segment: np.ndarray  # [H, W] int32 segment id, 0 = void
    class_id: np.ndarray  # [H, W] int32 class id, -1 = void
    backend: str = "torch"


def camera_tensors(
    K: Any, cam_to_world: Any, width: int, height: int, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """(viewmats [1, 4, 4] world->camera, Ks [1, 3, 3]) from a 3x3 K and a 4x4 OpenCV camera-to-world."""
    K = np.asarray(K, dtype=np.float64)
    c2w = np.asarray(cam_to_world, dtype=np.float64)
    if K.shape != (3, 3) or c2w.shape != (4, 4) or not (np.isfinite(K).all() and np.isfinite(c2w).all()):
        raise ValueError("K must be a finite 3x3 matrix and cam_to_world a finite 4x4 matrix")
    if not (
        isinstance(width, (int, np.integer))
        and isinstance(height, (int, np.integer))
        and 0 < width <= MAX_SIDE
        and 0 < height <= MAX_SIDE
    ):
        raise ValueError(f"width and height must be integers in 1..{MAX_SIDE}, got {width!r} x {height!r}")
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-9:
        raise ValueError("cam_to_world has a singular rotation part")
    w2c = np.linalg.inv(c2w)
    return (
        torch.as_tensor(w2c, dtype=dtype, device=device)[None],
        torch.as_tensor(K, dtype=dtype, device=device)[None],
    )


@torch.no_grad()
def render(
    model: SplatModel, K: Any, cam_to_world: Any, width: int, height: int, backend: str = "auto", labels: str = "auto"
) -> RenderOutput:
    """Render RGB, alpha, expected depth and labels of one pinhole view (K in pixels, centres at +0.5).

    labels: 'maxweight' (label of the Gaussian with the largest blending weight; torch backend), 'onehot'
        (composited one-hot channels + argmax; any backend) or 'auto' (maxweight on torch, onehot on gsplat).
    """
    chosen = choose_backend(model.device, backend)
    if labels == "auto":
        labels = "maxweight" if chosen == "torch" else "onehot"
    if labels not in ("maxweight", "onehot"):
        raise ValueError(f"labels must be 'auto', 'maxweight' or 'onehot', got {labels!r}")
    viewmats, Ks = camera_tensors(K, cam_to_world, width, height, model.device)
    quats, scales, opacities = model.activated()
    extra = {"max_weight_ids": True} if labels == "maxweight" else {}
    out, alphas, meta = rasterize(
        model.means,
        quats,
        scales,
        opacities,
        model.sh_coeffs(),
        viewmats,
        Ks,
        width,
        height,
        backend=chosen,
        sh_degree=model.sh_degree,
        backgrounds=model.background[None].to(model.means.dtype),
        render_mode="RGB+ED",
        **extra,
    )
    alpha = alphas[0, ..., 0]  # [H, W]
    if labels == "maxweight":
        segment, class_id = labels_from_ids(meta["max_weight_ids"][0], alpha, model.segment, model.class_id)
    else:
        segment, class_id = render_onehot_labels(model, viewmats, Ks, width, height, chosen)
    return RenderOutput(
        rgb=out[0, ..., :3].clamp(0, 1).float().cpu().numpy(),
        alpha=alpha.float().cpu().numpy(),
        depth=out[0, ..., 3].float().cpu().numpy(),
        segment=segment.cpu().numpy().astype(np.int32),
        class_id=class_id.cpu().numpy().astype(np.int32),
        backend=chosen,
    )


@torch.no_grad()
def render_onehot_labels(
    model: SplatModel, viewmats: Tensor, Ks: Tensor, width: int, height: int, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    """(segment [H, W] int32, class [H, W] int32) by compositing one-hot segment channels and taking argmax."""
    segs, classes = segment_class_table(model.segment, model.class_id)  # [L], [L]
    channel = torch.searchsorted(segs, model.segment.to(segs.dtype))  # [N] channel of each Gaussian
    onehot = torch.nn.functional.one_hot(channel, len(segs)).to(model.means.dtype)  # [N, L]
    background = torch.zeros(1, len(segs), dtype=model.means.dtype, device=model.device)
    background[0, 0] = 1.0  # the uncovered part of a pixel votes void
    quats, scales, opacities = model.activated()
    feats, _, _ = rasterize(
        model.means,
        quats,
        scales,
        opacities,
        onehot,
        viewmats,
        Ks,
        width,
        height,
        backend=backend,
        backgrounds=background,
    )
    best = feats[0].argmax(-1)  # [H, W]
    return segs[best].to(torch.int32), classes[best].to(torch.int32)


_CACHE: OrderedDict[tuple, SplatModel] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def load_bundle_splats(bundle_path: str | os.PathLike) -> SplatModel:
    """``<bundle>/splats.ply`` as a model on the render device, cached per (path, mtime, size)."""
    from panst3r_engine.bundle.checks import BundleError
    from panst3r_engine.bundle.spec import SPLATS_FILE
    from panst3r_engine.bundle.spec import bundle_path as checked_path
    from panst3r_engine.splats.export import read_splats_ply

    try:
        path = checked_path(Path(bundle_path).resolve(), SPLATS_FILE)  # no link out of the bundle
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if path is None:
        raise BundleError(
            f"the bundle {Path(bundle_path)} has no splats.ply; run the job with splats enabled "
            "(or add them with add_splats_to_bundle)"
        )
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    device = "cuda" if gsplat_cuda_available() else "cpu"
    model = read_splats_ply(path).to(device)
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[0] == key[0]]:  # an older version of the same file
            del _CACHE[old]
        _CACHE[key] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model


def render_view(
    bundle_path: str | os.PathLike, K: Any, cam_to_world: Any, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [H, W, 3], segment ids int32 [H, W], 0 = void) of a novel view from the bundle's splats."""
    out = render(load_bundle_splats(bundle_path), K, cam_to_world, width, height)
    return (np.round(out.rgb * 255.0)).astype(np.uint8), out.segment
