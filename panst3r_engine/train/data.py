"""Training samples from scene folders: photos in the network's layout plus per-segment targets.

A dataset is a folder in the project's scene format (``panst3r-synthetic-1``: what ``eval
make-scene`` writes and ``eval run`` reads) or a Panoptic Lifting scene; both are read with
:func:`panst3r_engine.eval.run.load_dataset`. Each scene's views are split into samples of up to
``views`` strided views (one sample = one MUSt3R memory, one joint decoding, as in PanSt3R's
5-view training tuples). Photos are processed as ``run`` processes them (``--resize 512``:
official crop + resize; ``none``: as they are), portrait views transposed to landscape, and the
ground truth follows with nearest-neighbour sampling.

Targets follow PanSt3R's ``_prepare_targets`` (fact sheet §9.2): one multi-view binary mask per
segment and the class's index in the training vocabulary. A thing segment is one instance; a stuff
class is one segment however many instance ids it carries; void pixels (class 0) belong to no mask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from panst3r_engine.eval.dataset import DatasetError, SceneDataset, View
from panst3r_engine.train.losses import Targets
from panst3r_engine.vocab.vocabularies import Vocabulary, merge_vocabularies, validate_names

MAX_VIEWS = 64  # per sample: one memory and one joint decoding must fit in memory


@dataclass(frozen=True)
class Sample:
    """One training sample: V views of one scene and their segments."""

    name: str  # "<scene folder>#<view stems>" for messages and logs
    images: torch.Tensor  # [V, 3, H, W] float32 in [-1, 1], landscape
    segments: torch.Tensor  # [V, H, W] int16 segment index, -1 = void
    labels: torch.Tensor  # [T] int64 class index into the training vocabulary

    def targets(self, device: torch.device | str = "cpu") -> Targets:
        """Binary masks [T, V, H, W] built on the fly (a label map is 4 x T times smaller than the masks)."""
        seg = self.segments.to(device)
        index = torch.arange(len(self.labels), device=device, dtype=seg.dtype)
        masks = (seg[None] == index[:, None, None, None]).float()
        return Targets(masks, self.labels.to(device))


def scene_vocabulary(scene: SceneDataset, where: str) -> Vocabulary:
    names = [c.name for c in scene.classes]
    validate_names(names, where)
    return Vocabulary(tuple(names), tuple(c.isthing for c in scene.classes), where)


def training_vocabulary(scenes: Sequence[tuple[str, SceneDataset]]) -> Vocabulary:
    """Union of the datasets' class names, first occurrence first (stable, unlike the official ``set``)."""
    return merge_vocabularies([scene_vocabulary(s, name) for name, s in scenes])


def view_groups(num_views: int, views: int) -> list[list[int]]:
    """Split 0..n-1 into ceil(n / views) strided groups (each spans the whole capture)."""
    groups = -(-num_views // views)
    return [list(range(g, num_views, groups)) for g in range(groups)]


def process_view(view: View, resize: str, patch_size: int = 16) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(image [3, H, W] in [-1, 1], semantic [H, W], instance [H, W]) as the network sees the photo."""
    from panst3r_engine.eval.run import processing_frame, to_processed
    from panst3r_engine.pipeline.images import resize_512, to_network

    if view.semantic is None or view.instance is None:
        raise DatasetError(f"view {view.stem} has no semantic/instance ground truth; training needs both")
    image = to_network(view.image)
    semantic, instance = view.semantic, view.instance
    if resize == "512":
        image, box = resize_512(image)
        size = (image.shape[-1], image.shape[-2])
        semantic, instance = to_processed(semantic, box, size), to_processed(instance, box, size)
    elif resize == "none":
        box, size = processing_frame(view.width, view.height, "none")
        if view.width % patch_size or view.height % patch_size:
            raise DatasetError(
                f"view {view.stem} is {view.width}x{view.height}; with --resize none both sides must be "
                f"multiples of {patch_size} (or use --resize 512)"
            )
    else:
        raise ValueError(f"unknown resize mode {resize!r}")
    if image.shape[-2] > image.shape[-1]:  # portrait: the network sees it transposed, as in `run`
        image, semantic, instance = image.transpose(1, 2).contiguous(), semantic.T, instance.T
    return image, np.ascontiguousarray(semantic), np.ascontiguousarray(instance)


def segment_targets(
    semantic: np.ndarray, instance: np.ndarray, class_index: dict[int, int], things: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Label maps [V, H, W] -> (segment index map [V, H, W] int16, -1 void; labels [T]).

    ``class_index`` maps the dataset's class ids to vocabulary indices (void and unknown ids are
    left out); things keep their instance ids, stuff classes merge into one segment.
    """
    sem = semantic.astype(np.int64)
    inst = np.where(np.isin(sem, list(things)), instance.astype(np.int64), 0)
    known = np.isin(sem, list(class_index))
    keys = np.where(known, sem * (1 << 32) + inst, -1)
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(keys.shape)
    valid = uniq >= 0
    if len(uniq) - valid.sum() > 0:  # -1 sorts first
        inverse = inverse - 1
    if valid.sum() > np.iinfo(np.int16).max:
        raise DatasetError(f"{int(valid.sum())} segments in one sample; at most 32767 are supported")
    labels = np.array([class_index[int(k >> 32)] for k in uniq[valid]], np.int64)
    return inverse.astype(np.int16), labels


def scene_samples(
    name: str, scene: SceneDataset, vocabulary: Vocabulary, views: int = 5, resize: str = "512"
) -> list[Sample]:
    """The training samples of one scene."""
    if not 1 <= views <= MAX_VIEWS:
        raise DatasetError(f"views per sample must be 1..{MAX_VIEWS}, got {views}")
    index = {n: i for i, n in enumerate(vocabulary.names)}
    class_index = {c.id: index[c.name] for c in scene.classes if c.name in index}
    things = {c.id for c in scene.classes if c.isthing}
    samples = []
    for group in view_groups(len(scene.views), views):
        processed = [process_view(scene.views[i], resize) for i in group]
        shapes = {tuple(p[0].shape) for p in processed}
        if len(shapes) > 1:
            raise DatasetError(f"{name}: views of one sample must share one size after processing, got {shapes}")
        seg, labels = segment_targets(
            np.stack([p[1] for p in processed]), np.stack([p[2] for p in processed]), class_index, things
        )
        stems = ",".join(scene.views[i].stem for i in group)
        samples.append(
            Sample(
                name=f"{name}#{stems}",
                images=torch.stack([p[0] for p in processed]),
                segments=torch.from_numpy(seg),
                labels=torch.from_numpy(labels),
            )
        )
    return samples


def load_training_data(
    paths: Sequence[str | os.PathLike], views: int = 5, resize: str = "512"
) -> tuple[list[Sample], Vocabulary]:
    """All samples of the given dataset folders and the training vocabulary (union of their classes)."""
    from panst3r_engine.eval.run import load_dataset

    if not paths:
        raise DatasetError("give at least one dataset folder to train on")
    scenes = [(str(p), load_dataset(p)[0]) for p in paths]
    vocabulary = training_vocabulary(scenes)
    samples = [s for name, scene in scenes for s in scene_samples(name, scene, vocabulary, views, resize)]
    if not any(len(s.labels) for s in samples):
        raise DatasetError("the datasets hold no labelled segment; check their semantic/instance maps")
    return samples, vocabulary
