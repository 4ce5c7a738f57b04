"""The job's options: one frozen dataclass, validated once at the entry point.
"""

from __future__ import annotations

from dataclasses import dataclass

from panst3r_engine.errors import OptionsError

POSTPROCESS_METHODS = ("standard_v1", "standard_v2", "qubo")


DEFAULT_MAX_KEYFRAMES = 50  # the official demo's default; memory grows linearly with keyframes


@dataclass(frozen=True)
class JobOptions:
    """Everything a job can be asked for; ``validate`` runs once at the entry point."""

    weights: str = "v2"
    keyframes: int | None = None
    postprocess: str | None = None  # None: the checkpoint's default
    vocab: str = "scannetpp"
    vocab_embeddings: str | None = None  # .npz path, 'random', or None (computed/cached)
    conf_threshold: float = 3.0
    device: str = "auto"
    resize: str = "512"
    max_batch: int = 1
    seed: int = 0
    save_raw: bool = False
    amp: bool = False
    overwrite: bool = False
    splats: bool = False  # also fit 3D Gaussians (splats.ply) for novel-view review
    splat_steps: int | None = None  # None: by device (splats/fit.py device_budget)

    def validate(self) -> "JobOptions":
        if self.keyframes is not None and self.keyframes < 1:
            raise OptionsError("keyframes must be at least 1")
        if self.postprocess is not None and self.postprocess not in POSTPROCESS_METHODS:
            raise OptionsError(f"unknown post-processing {self.postprocess!r}; choose one of {', '.join(POSTPROCESS_METHODS)}")
        if not (self.conf_threshold >= 1.0):
            raise OptionsError(f"the confidence threshold must be >= 1 (confidence is 1 + exp(c)), got {self.conf_threshold}")
        if self.resize not in ("512", "none"):
            raise OptionsError(f"resize must be '512' or 'none', got {self.resize!r}")
        if self.max_batch < 1:
            raise OptionsError("max_batch must be at least 1")
        if self.splat_steps is not None and self.splat_steps < 1:
            raise OptionsError("splat_steps must be >= 1 (or left out for the default)")
        return self

