"""The typed data the pipeline's stages hand each other, from the network's outputs to the bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panst3r_engine.pipeline.cameras import Camera
from panst3r_engine.pipeline.images import Photo
from panst3r_engine.pipeline.points import PointCloud
from panst3r_engine.vocab.embeddings import ClassEmbeddings


@dataclass(frozen=True)
class Segment:
    """One panoptic segment (an instance or a stuff region) shared by all views."""

    id: int  # >= 1, the value in the panoptic maps and in points' ``segment``
    class_id: int  # column of the vocabulary
    score: float  # class probability (standard) or class probability x mask confidence (QUBO)
    query: int  # the mask transformer query it came from


@dataclass
class Reconstruction:
    """Everything a job knows after the network, post-processing and camera recovery."""

    photos: list[Photo]  # in input order, each in its own orientation
    cameras: list[Camera]
    points: PointCloud  # confident points of every view
    panoptic: list[np.ndarray]  # per photo int32 [H, W] segment ids, 0 = void
    segments: list[Segment]
    vocab: ClassEmbeddings
    keyframes: list[int]  # photo indices, the reference keyframe first
    postprocess: str  # the method used
    sources: list[dict | None] | None = None  # per photo: {"video", "frame", "time"} when taken from a video


@dataclass
class JobResult:
    """What the caller of :func:`~panst3r_engine.pipeline.run.run_job` gets back."""

    bundle: Path
    manifest: dict
    timings: dict[str, float] = field(default_factory=dict)
    num_points: int = 0  # rows of points.npz
    num_labelled: int = 0  # of which carry a segment id
    warnings: list[str] = field(default_factory=list)  # also in manifest["warnings"]
