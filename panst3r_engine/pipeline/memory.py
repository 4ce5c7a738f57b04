"""Estimating the memory a job needs before running it.

Big jobs fail late and expensively when memory runs out; we estimate the
peak from the model and image sizes up front and refuse early with advice.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.inference import BACKBONE_BATCH

GiB = 2**30


class InsufficientMemory(PanSt3RError):
    """A job that would not fit in the device's memory, with the keyframe count or group size that would."""

    code = "out_of_memory"


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of a job by what holds them, and the scratch disk its per-view outputs take.

    A job keeps only small per-photo state in memory; each photo's network input, and each view's mask logits
    and pointmaps, go to disk (``scratch``) as they are made and are read back one view at a time
    (``pipeline/viewstore``). The peak is the larger of two phases: the network (weights, MUSt3R memory, the
    keyframes' panoptic features decoded together, every photo and its encoder tokens) and the rest (every
    photo's panoptic maps and points, one view's mask probabilities); both hold the photos. The joint decode
    makes full-resolution mask logits one view at a time, so they count once, not once per keyframe.
    """

    weights: int
    must3r_memory: int  # keyframe token memory, all decoder layers
    per_view: int  # held for every photo through the network: the photo, its encoder tokens
    keyframes: int  # the keyframes' panoptic features, their attention masks, one view's mask logits
    working: int  # transient activations of one backbone call
    results: int  # held for every photo after the network: the photo, its panoptic maps, its points (at most)
    postprocess: int  # one view's full-resolution mask probabilities (views are streamed)
    scratch: int = 0  # disk, not memory: float16 mask logits, float32 pointmaps and confidences of every view

    @property
    def total(self) -> int:
        network = self.must3r_memory + self.per_view + self.keyframes + self.working
        return self.weights + max(network, self.results + self.postprocess)


INPUT_BYTES = 3  # per pixel: the photo (uint8); its float32 network input is on disk until a backbone reads it
POINT_BYTES = 12 + 3 + 4 + 4 + 2 + 4  # per point (at most one per pixel): xyz, rgb, conf, segment, view, pixel
# per pixel after the network: the photo, then the larger of post-processing (argmax maps, then panoptic ids and
# confidence) and the end (panoptic ids and points; post-processing's maps are gone by then)
RESULT_BYTES = 3 + max(4 + 4 + 4 + 4, 4 + POINT_BYTES)
SCRATCH_BYTES = 3 * 4 + 7 * 4 + 4  # per pixel on disk: input, raw pointmaps, confidence (float32); + masks


def estimate(
    model, sizes: list[tuple[int, int]], num_keyframes: int, max_batch: int = 1, bytes_per_value: int = 4
) -> MemoryEstimate:
    """Peak bytes for ``sizes`` [(H, W)] network inputs with ``num_keyframes`` keyframes."""
    cfg = model.cfg
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = [(h // 16) * (w // 16) for h, w in sizes]
    pixels = [h * w for h, w in sizes]
    largest = max(tokens)
    queries = cfg.panoptic.mask_transformer.num_queries
    mask_dim = cfg.panoptic.mask_transformer.mask_dim
    hidden = cfg.panoptic.mask_transformer.hidden_dim
    mem = (
        cfg.decoder.depth * cfg.decoder.dim * bytes_per_value * sum(sorted(tokens)[-num_keyframes:]) * 2
    )  # + projected k/v
    per_view = sum(t * cfg.encoder.dim * bytes_per_value + px * INPUT_BYTES for t, px in zip(tokens, pixels))
    heads = cfg.panoptic.mask_transformer.num_heads
    kf_tokens = sum(sorted(tokens)[-num_keyframes:])
    keyframes = kf_tokens * (64 * mask_dim + hidden + 2 * queries) * bytes_per_value  # stride-2 features (64 per
    keyframes += kf_tokens * queries * heads  # token), fpn, attention logits; attention mask (bool, per head)
    keyframes += 2 * largest * 64 * queries * bytes_per_value  # one view's mask logits (and its resizing)
    width = max(cfg.encoder.dim * 4, cfg.concat_dim * 4)
    working = max(max_batch, BACKBONE_BATCH) * largest * width * bytes_per_value * 6  # backbones batch >= 4 views
    working += max_batch * largest * 64 * (mask_dim + queries) * bytes_per_value * 3  # one chunk's features, masks
    results = sum(px * RESULT_BYTES for px in pixels)
    postprocess = 2 * queries * max(pixels) * bytes_per_value  # one view at a time, probs + weighted copy
    scratch = sum(px * SCRATCH_BYTES + queries * px // 4 * 2 for px in pixels)
    return MemoryEstimate(weights, mem, per_view, keyframes, working, results, postprocess, scratch)


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing happens).

    Why: glibc serves allocations of a few MB from its heap once one of that size has been freed, and a heap
    with small live blocks between the freed ones (a photo between network inputs that were dropped) keeps
    all those pages resident: measured, about 2 MB of resident memory per photo loaded that is not in use.
    Called between a job's stages, it keeps the process's resident memory close to what the job holds.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def trimming(progress: Callable[..., None], interval: float = 0.5) -> Callable[..., None]:
    """``progress`` that also calls :func:`release_free_memory` (at most every ``interval`` seconds): the
    streamed stages report after every view, which is when a view's large arrays have just been dropped."""
    last = [float("-inf")]

    def report(*args) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            release_free_memory()
            last[0] = now
        progress(*args)

    return report


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without it; Windows: no CDLL(None))
        return None


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: free VRAM; CPU: MemAvailable, or total RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_fits(
    model,
    sizes: list[tuple[int, int]],
    num_keyframes: int,
    device: torch.device,
    max_batch: int = 1,
    weights_loaded: bool = True,
    available: int | None = None,
) -> MemoryEstimate:
    """Raise :class:`InsufficientMemory` with a suggested keyframe count when the job will not fit.

    ``available`` overrides the measured free memory (bytes), e.g. for a per-job budget.
    """
    est = estimate(model, sizes, num_keyframes, max_batch)
    free = (available if available is not None else available_bytes(device)) + (est.weights if weights_loaded else 0)
    if est.total <= free:
        return est
    fitting = [k for k in range(num_keyframes - 1, 1, -1) if estimate(model, sizes, k, max_batch).total <= free]
    where = "GPU memory" if device.type == "cuda" else "memory"
    need = f"this job needs about {est.total / GiB:.1f} GiB of {where} but only {free / GiB:.1f} GiB is available"
    if fitting:
        raise InsufficientMemory(f"{need}; use --keyframes {fitting[0]} (or fewer) to fit")
    raise InsufficientMemory(
        f"{need}, even with 2 keyframes; run fewer photos at once (e.g. split into groups of "
        f"{max(2, len(sizes) // 2)}) or use a machine with more memory"
    )


def check_disk(needed: int, out_dir: str | os.PathLike, free: int | None = None) -> None:
    """Raise :class:`InsufficientMemory` when the job's scratch files (``MemoryEstimate.scratch``) would not fit
    on the disk that will hold ``out_dir`` (they are written beside it). ``free`` overrides the measured space."""
    if free is None:
        probe = Path(out_dir).absolute()
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
    if needed > free:
        raise InsufficientMemory(
            f"this job needs about {needed / GiB:.1f} GiB of disk space beside {out_dir} for its per-view outputs "
            f"(deleted when it ends) but only {free / GiB:.1f} GiB is free; free some space, choose an output "
            "folder on another disk, or run fewer photos at once"
        )
