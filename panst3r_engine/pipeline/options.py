"""The job's options: one frozen dataclass whose field metadata is the one declaration of every option.

Each field's metadata (help, type, min/max, choices, whether a service client
may set it) generates the ``run`` command's flags, :meth:`JobOptions.validate`
and the service's per-field checks, so they cannot disagree. Imports nothing
heavy: the command line reads it before deciding to load torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace

from panst3r_engine.errors import OptionsError

POSTPROCESS_METHODS = ("standard_v1", "standard_v2", "qubo")
RESIZE_MODES = ("512", "none")
KEYFRAME_METHODS = ("auto", "linspace", "retrieval")
DEFAULT_MAX_KEYFRAMES = 50  # the official demo's default; memory grows linearly with keyframes
MAX_KEYFRAMES = 10_000
MAX_SPLAT_STEPS = 100_000
MAX_BATCH = 64
MAX_VIDEO_FRAMES = 2000
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and many RNGs take 32-bit seeds


def option(default, help: str, kind: type, *, min=None, max=None, choices=None, client: bool = False):
    """A dataclass field carrying its option metadata (``client``: a service client may set it)."""
    meta = {"help": help, "type": kind, "min": min, "max": max, "choices": choices, "client": client}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class JobOptions:
    """Everything a job can be asked for; ``validate`` runs once at the entry point."""

    weights: str = option("v2", "v1, v2, a registry id, or a checkpoint path (default v2)", str)
    keyframes: int | None = option(
        None,
        f"number of keyframes; 0 or left out: all photos, at most {DEFAULT_MAX_KEYFRAMES} (a number above "
        "the photo count uses every photo)",
        int,
        min=0,
        max=MAX_KEYFRAMES,
        client=True,
    )
    keyframes_by: str = option(
        "auto",
        "how keyframes are chosen: linspace (evenly spaced, the official default), retrieval (views far "
        "apart in appearance, ordered by overlap: best for unordered photos; MUSt3R's retrieval head when its "
        "files are available, else a training-free similarity) or auto (retrieval with MUSt3R's head when its "
        "files are available, else linspace)",
        str,
        choices=KEYFRAME_METHODS,
        client=True,
    )
    retrieval: str | None = option(
        None,
        "MUSt3R retrieval head for keyframes (a *_retrieval_trainingfree.pth with its *_retrieval_codebook.pkl "
        "beside it); default: must3r-retrieval-512 from the weights cache, when downloaded",
        str,
    )
    video_frames: int | None = option(
        None,
        "frames taken from each video given as input (default 30): the sharpest of every few, near-duplicates dropped",
        int,
        min=1,
        max=MAX_VIDEO_FRAMES,
        client=True,
    )
    video_fps: float | None = option(
        None,
        "sample videos at this many frames per second instead of a count",
        float,
        min=0.01,
        max=120.0,
        client=True,
    )
    postprocess: str | None = option(
        None, "segment merging (default: the checkpoint's own default)", str, choices=POSTPROCESS_METHODS, client=True
    )
    vocab: str | None = option(
        None,
        "scannetpp, coco, ade20k, checkpoint (the classes a checkpoint written by train stores), or a file with "
        "one class per line (default: checkpoint when the checkpoint stores its classes, else scannetpp)",
        str,
        client=True,
    )
    vocab_embeddings: str | None = option(
        None, "class text embeddings: an .npz (names + embeddings) or 'random' (smoke tests)", str, client=True
    )
    conf_threshold: float = option(3.0, "keep points with confidence >= T (default 3)", float, min=1.0, client=True)
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps", str)
    resize: str = option(
        "512",
        "512: crop/resize like the official loader; none: use photos as they are (multiples of 16)",
        str,
        choices=RESIZE_MODES,
    )
    max_batch: int = option(
        1,
        f"views per backbone call, 1 to {MAX_BATCH} (outputs do not depend on it)",
        int,
        min=1,
        max=MAX_BATCH,
        client=True,
    )
    seed: int = option(
        0, "seed for QUBO restarts and random embeddings (default 0)", int, min=0, max=MAX_SEED, client=True
    )
    save_raw: bool = option(False, "also write OUT/raw.npz (raw network outputs)", bool, client=True)
    amp: bool = option(False, "bfloat16 autocast for the MUSt3R decoder and DINOv2 (CUDA, or a CPU with bf16)", bool)
    overwrite: bool = option(False, "replace OUT if it exists", bool)
    splats: bool = option(False, "also fit 3D Gaussians (OUT/splats.ply) for novel views", bool, client=True)
    splat_steps: int | None = option(
        None,
        f"optimisation steps for --splats, 1 to {MAX_SPLAT_STEPS} (default: auto (a time budget on CPU, "
        "2000 steps on a GPU))",
        int,
        min=1,
        max=MAX_SPLAT_STEPS,
        client=True,
    )

    def validate(self) -> JobOptions:
        """Check every field against its metadata; returns the options with 0 keyframes spelled None (auto)."""
        for f in fields(self):
            check_value(f.name, getattr(self, f.name))
        if self.splat_steps is not None and not self.splats:  # a step count alone would be silently ignored
            raise OptionsError("option 'splat_steps' needs splats; add --splats (\"splats\": true) or leave it out")
        return replace(self, keyframes=None) if self.keyframes == 0 else self


def option_fields() -> dict:
    """Field name -> its ``dataclasses.Field`` (the metadata is ``.metadata``)."""
    return {f.name: f for f in fields(JobOptions)}


def expected(name: str) -> str:
    """What a field accepts, as the end of a sentence: 'an integer from 1 to 64'."""
    meta = option_fields()[name].metadata
    if meta["choices"]:
        return f"one of {', '.join(meta['choices'])}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[meta["type"]]
    low, high = (f"{x:g}" if isinstance(x, float) else x for x in (meta["min"], meta["max"]))
    if low is not None and high is not None:
        return f"{words} from {low} to {high}"
    if low is not None:
        return f"{words} >= {low}"
    return words if high is None else f"{words} <= {high}"


def check_value(name: str, value: object) -> None:
    """Raise :class:`OptionsError` unless ``value`` suits field ``name`` (None only where None is the default)."""
    f = option_fields()[name]
    if value is None and f.default is None:
        return
    if not _fits(f.metadata, value):
        raise OptionsError(f"option {name!r} must be {expected(name)}, got {_shown(value)}")


def _fits(meta, value: object) -> bool:
    """Type (a bool is no number), finiteness, range and choices."""
    kind = meta["type"]
    if isinstance(value, bool) != (kind is bool):
        return False
    if kind is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
    elif not isinstance(value, kind):
        return False
    if meta["choices"] and value not in meta["choices"]:
        return False
    return (meta["min"] is None or value >= meta["min"]) and (meta["max"] is None or value <= meta["max"])


def _shown(value: object) -> str:
    """The offending value, short, as the user typed it (JSON spelling: NaN, Infinity, true)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
