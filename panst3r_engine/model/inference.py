"""Multi-view inference in the official order (PanSt3R, arXiv 2506.21348; the public demo in naver/panst3r).

1. encode every image with the MUSt3R encoder;
2. build the MUSt3R memory on the keyframes, in batches [2, 1, 1, ...];
3. render the keyframes against that memory, add DINOv2 features, and decode
   all keyframes jointly with the mask transformer (one query = one instance
   across views);
4. render every other view against the same memory and predict its masks
   from the keyframes' final queries.

Unlike the official code, any ``max_batch`` gives the same outputs: batching
only groups same-size views for the backbones; every view-dependent
normalisation (LoftUp's min-max) stays per view. The backbones (MUSt3R encoder,
decoder render, DINOv2) always take at least ``BACKBONE_BATCH`` views per call:
their activations are small (tens of MB per 512x384 view), and fewer, larger
matmuls ran 1.2-2x faster per block on the 2-core test machine; ``max_batch``
bounds the views whose panoptic features (the large per-view state) are held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from panst3r_engine.model.must3r_decoder import Memory

if TYPE_CHECKING:
    from panst3r_engine.model.panst3r import PanSt3R

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, float], None]
BACKBONE_BATCH = 4  # same-size views per backbone call at least (see the module docstring)
AMP_DEVICES = ("cuda", "cpu")  # where ``amp`` turns on bf16 autocast (torch's CPU autocast covers matmuls and SDPA)


@dataclass
class RawOutputs:
    """Raw network outputs, per view in input order (all tensors on CPU, float32).

    pointmaps_raw: per view [H, W, 7] head output before activation.
    pred_logits: [Q, C] class logits (from the keyframe pass; valid for all views).
    pred_masks: per view [Q, H/2, W/2] mask logits.
    (The two per-view sequences are lists, or the stores given to :func:`run_inference`.)
    out_queries: [Q, hidden] final query states.
    attention_margin: [Q] smallest |mask logit| behind any attention decision of a
        query; near zero means float rounding could flip that decision.
    """

    pointmaps_raw: MutableSequence[torch.Tensor]
    pred_logits: torch.Tensor
    pred_masks: MutableSequence[torch.Tensor]
    out_queries: torch.Tensor
    keyframes: list[int]
    true_shapes: list[tuple[int, int]]
    attention_margin: torch.Tensor | None = None
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls natively here; without it bf16 is emulated (~50x slower measured)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_keyframes(num_views: int, num_keyframes: int | None) -> list[int]:
    """Evenly spaced keyframes as the official ``linspace`` (truncating); all when K >= N."""
    if num_views < 1:
        raise ValueError("at least one view is needed")
    if num_keyframes is None or num_keyframes >= num_views:
        return list(range(num_views))
    if num_keyframes < 1:
        raise ValueError(f"the number of keyframes must be at least 1 (got {num_keyframes})")
    return [int(i) for i in np.linspace(0, num_views - 1, num_keyframes, dtype=int)]


def memory_batches(count: int) -> list[int]:
    """Update schedule [2, 1, 1, ...] summing to ``count`` ([1] for a lone keyframe)."""
    if count <= 2:
        return [count]
    return [2] + [1] * (count - 2)


def _same_size_chunks(indices: Sequence[int], shapes: Sequence[tuple[int, int]], max_batch: int) -> list[list[int]]:
    """Group view indices by image size (first-seen order), then split into chunks."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in indices:
        groups.setdefault(tuple(shapes[i]), []).append(i)
    return [group[s : s + max_batch] for group in groups.values() for s in range(0, len(group), max_batch)]


class _Run:
    """State of one inference call; methods are the stages."""

    def __init__(
        self,
        model: PanSt3R,
        images: Sequence[torch.Tensor],
        max_batch: int,
        progress: ProgressFn | None,
        keep_features: bool,
        amp: bool = False,
        pointmaps: MutableSequence[torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.amp = amp and model.device.type in AMP_DEVICES
        if self.amp and model.device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("this CPU has no native bf16 (avx512_bf16 or AMX): --amp will be much slower than float32")
        self.device = model.device
        self.images = images
        self.shapes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        self.max_batch = max(1, int(max_batch))
        self.backbone_batch = max(self.max_batch, BACKBONE_BATCH)
        self.progress = progress or (lambda stage, fraction: None)
        self.keep = keep_features
        self.features: dict[str, list] = {
            k: [None] * len(images) for k in ("enc_tokens", "enc_pos", "dec_feats", "dino_feats", "fpn", "mask_feats")
        }
        self.pointmaps = pointmaps if pointmaps is not None else [None] * len(images)
        self.fpn: list = [None] * len(images)
        self.mask_feats: list = [None] * len(images)

    def backbone_precision(self):
        """bf16 autocast for the MUSt3R decoder and DINOv2, where the official code autocasts (CUDA or CPU).

        The encoder and the pointmap head force float32 themselves; the panoptic head always runs in float32.
        """
        device = self.device.type if self.device.type in AMP_DEVICES else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.amp)

    def _batch(self, chunk: list[int]) -> torch.Tensor:
        return torch.stack([self.images[i] for i in chunk]).to(self.device, torch.float32)

    def encode(self) -> None:
        chunks = _same_size_chunks(range(len(self.images)), self.shapes, self.backbone_batch)
        tokens, pos = [None] * len(self.images), [None] * len(self.images)
        for n, chunk in enumerate(chunks):
            t, p = self.model.must3r_encoder(self._batch(chunk))
            for j, i in enumerate(chunk):
                tokens[i], pos[i] = t[j], p[j]
            self.progress("encode", (n + 1) / len(chunks))
        self.tokens, self.pos = tokens, pos
        self.features["enc_tokens"], self.features["enc_pos"] = tokens, pos

    def build_memory(self, keyframes: list[int]) -> Memory:
        memory, start = None, 0
        for size in memory_batches(len(keyframes)):
            batch = keyframes[start : start + size]
            with self.backbone_precision():
                memory = self.model.must3r_decoder.update(
                    [self.tokens[i] for i in batch], [self.pos[i] for i in batch], memory
                )
            start += size
            self.progress("memory", start / len(keyframes))
        return memory

    def render(
        self, views: list[int], memory: Memory, stage: str, then: Callable[[list[int]], None] | None = None
    ) -> None:
        """MUSt3R render + DINOv2 + per-view panoptic features for ``views``; ``then(views)`` after every
        ``max_batch`` views' panoptic features (the backbones run on larger chunks)."""
        chunks = _same_size_chunks(views, self.shapes, self.backbone_batch)
        for n, chunk in enumerate(chunks):
            tokens = torch.stack([self.tokens[i] for i in chunk])
            pos = torch.stack([self.pos[i] for i in chunk])
            images = self._batch(chunk)
            with self.backbone_precision():
                dec_feats, pointmaps = self.model.must3r_decoder.render(tokens, pos, memory)
                dino = self.model.dino_encoder(images)
            dec_feats, dino = dec_feats.float(), dino.float()
            concat = torch.cat((tokens, dec_feats, dino), dim=-1)
            held: list[int] = []  # views whose panoptic features await ``then``
            for j, i in enumerate(chunk):
                fpn, mask_feats = self.model.panoptic_decoder.encode_views(
                    concat[j : j + 1], pos[j : j + 1], images[j : j + 1]
                )
                self.fpn[i], self.mask_feats[i] = fpn[0], mask_feats[0]
                self.pointmaps[i] = pointmaps[j].float().cpu()
                if self.keep:
                    for key, value in (
                        ("dec_feats", dec_feats[j]),
                        ("dino_feats", dino[j]),
                        ("fpn", fpn[0]),
                        ("mask_feats", mask_feats[0]),
                    ):
                        self.features[key][i] = value.cpu()
                held.append(i)
                if then is not None and (len(held) == self.max_batch or j == len(chunk) - 1):
                    then(held)
                    held = []
            self.progress(stage, (n + 1) / len(chunks))

    def release(self, views: list[int]) -> None:
        """Drop the panoptic features of ``views`` once their masks exist (they are the largest per-view state)."""
        for i in views:
            self.fpn[i] = self.mask_feats[i] = None


@torch.no_grad()
def run_inference(
    model: PanSt3R,
    images: Sequence[torch.Tensor],
    class_embeddings: torch.Tensor,
    num_keyframes: int | None = None,
    keyframes: Sequence[int] | Callable[[list[torch.Tensor]], list[int]] | None = None,
    max_batch: int = 1,
    progress: ProgressFn | None = None,
    keep_features: bool = False,
    amp: bool = False,
    masks: MutableSequence[torch.Tensor] | None = None,
    pointmaps: MutableSequence[torch.Tensor] | None = None,
) -> RawOutputs:
    """Run the network on views in [-1, 1] (each [3, H, W], H and W multiples of 16).

    Args:
        class_embeddings: [C, text_dim] unit-norm class text embeddings.
        num_keyframes: K for the linspace choice (all views when None or >= V).
        keyframes: explicit keyframe indices (first = reference camera), or a function choosing them from the
            views' encoder tokens (e.g. by retrieval); overrides K.
        max_batch: views whose panoptic features are held at once (and views per backbone call, at least
            ``BACKBONE_BATCH``); the outputs do not depend on it.
        amp: bf16 autocast for the MUSt3R decoder and DINOv2 on CUDA or CPU (ignored elsewhere, e.g. MPS); the
            encoder, the pointmap head and the panoptic head stay float32 as in the official code. Opt-in: on a
            CPU without native bf16 (avx512_bf16 / AMX) it is slower than float32.
        masks, pointmaps: where each view's mask logits and raw pointmaps go as soon as they exist (e.g. a
            disk-backed :class:`~panst3r_engine.pipeline.viewstore.ViewStore`; default: lists in RAM). The
            non-keyframes stream through render -> masks chunk by chunk, so the panoptic features of only one
            chunk are held at a time.
    """
    _check_inputs(model, images, class_embeddings)
    run = _Run(model, images, max_batch, progress, keep_features, amp, pointmaps)
    run.encode()
    if callable(keyframes):
        chosen = [int(i) for i in keyframes(run.tokens)]
    else:
        chosen = list(keyframes) if keyframes is not None else select_keyframes(len(images), num_keyframes)
    others = sorted(set(range(len(images))) - set(chosen))
    memory = run.build_memory(chosen)
    run.render(chosen, memory, "render_keyframes")
    text = class_embeddings.to(run.device, torch.float32)
    run.progress("decode_keyframes", 0.0)
    decoded = model.panoptic_decoder.decode(
        [run.fpn[i] for i in chosen], [run.mask_feats[i] for i in chosen], text, masks=False
    )
    masks = masks if masks is not None else [None] * len(images)

    def predict(chunk: list[int]) -> None:  # masks of a chunk of views from the keyframes' final queries
        predicted = model.panoptic_decoder.predict(decoded["out_queries"], [run.mask_feats[i] for i in chunk], text)
        for i, m in zip(chunk, predicted["pred_masks"]):
            masks[i] = m.cpu()
        run.release(chunk)

    for i in chosen:  # the keyframes' final masks one view at a time (the joint decode's, bit for bit)
        predict([i])
    run.progress("decode_keyframes", 1.0)

    if others:
        run.render(others, memory, "render_views", then=predict)
    features = (
        {k: [t.cpu() if t is not None else None for t in v] for k, v in run.features.items()} if keep_features else {}
    )
    return RawOutputs(
        pointmaps_raw=run.pointmaps,
        pred_logits=decoded["pred_logits"].cpu(),
        pred_masks=masks,
        out_queries=decoded["out_queries"].cpu(),
        keyframes=chosen,
        true_shapes=run.shapes,
        attention_margin=decoded["attention_margin"].cpu(),
        features=features,
    )


def _check_inputs(model: PanSt3R, images: Sequence[torch.Tensor], class_embeddings: torch.Tensor) -> None:
    if len(images) == 0:
        raise ValueError("no images given")
    patch = model.patch_size
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[0] != 3:
            raise ValueError(f"image {i} must be [3, H, W], got {tuple(im.shape)}")
        if im.shape[1] % patch or im.shape[2] % patch:
            raise ValueError(
                f"image {i} is {im.shape[2]}x{im.shape[1]} pixels; both sides must be multiples of {patch}"
            )
    if class_embeddings.ndim != 2 or class_embeddings.shape[1] != model.text_dim:
        raise ValueError(f"class embeddings must be [C, {model.text_dim}], got {tuple(class_embeddings.shape)}")
    if class_embeddings.shape[0] == 0:
        raise ValueError("the vocabulary is empty: give at least one class")


def activate_pointmaps(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official activations of the head output [..., 7].

    Returns pts3d (global) [..., 3], pts3d_local [..., 3], conf [...]: xyz by
    ``v / ||v|| * expm1(||v||)`` (norm clipped at 1e-8) and ``conf = 1 + exp(c)``.
    """
    from panst3r_engine.geometry import conf_activation, pointmap_activation

    return pointmap_activation(raw[..., 0:3]), pointmap_activation(raw[..., 3:6]), conf_activation(raw[..., 6])
