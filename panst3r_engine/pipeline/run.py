"""Photos in, panoptic 3D result bundle out: the engine's main job, read top to bottom as its stages.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from panst3r_engine import __version__
from panst3r_engine.model.inference import RawOutputs, activate_pointmaps, run_inference
from panst3r_engine.model.loading import LoadedModel, ModelCache
from panst3r_engine.pipeline.cameras import ViewGeometry, recover_camera
from panst3r_engine.pipeline.images import Photo, load_photos, to_photo_orientation
from panst3r_engine.pipeline.options import DEFAULT_MAX_KEYFRAMES, JobOptions
from panst3r_engine.pipeline.progress import Progress


@dataclass
class JobResult:
    bundle: Path
    manifest: dict
    timings: dict[str, float] = field(default_factory=dict)
    num_points: int = 0  # rows of points.npz
    num_labelled: int = 0  # of which carry a segment id


def run_job(photo_paths: list[str | os.PathLike], out_dir: str | os.PathLike, options: JobOptions,
            progress: Progress | None = None, models: ModelCache | None = None) -> JobResult:
    """Run the whole pipeline; the bundle appears at ``out_dir`` only when complete."""
    options = options.validate()
    progress = progress or Progress()
    models = models or ModelCache()
    out_dir = Path(out_dir)
    from panst3r_engine.bundle.write import check_output_folder

    check_output_folder(out_dir, options.overwrite)
    if not photo_paths:
        raise ValueError("no photos given")

    progress("load_images", 0.0, f"{len(photo_paths)} photos")
    photos = load_photos(list(photo_paths), options.resize)
    progress("load_images", 1.0)
    loaded = models.get(options.weights, options.device, progress)
    vocab = _vocabulary(loaded, options, progress)
    keyframes = _keyframes(len(photos), options.keyframes)
    _check_memory(loaded, photos, keyframes, options)
    raw = _infer(loaded, photos, vocab.vectors, keyframes, options, progress)
    method = options.postprocess or loaded.config.postprocess_default
    panoptic = _postprocess(raw, method, options.seed, progress)
    views, cameras = _cameras(raw, progress)
    return _write(out_dir, photos, views, cameras, panoptic, vocab, raw, loaded, options, method, progress)


def _write(out_dir: Path, photos, views, cameras, panoptic, vocab, raw, loaded: LoadedModel, options: JobOptions,
           method: str, progress: Progress) -> JobResult:
    """Write the bundle in a hidden staging folder (plus splats), then publish it in one rename."""
    import shutil

    from panst3r_engine.bundle.write import publish_bundle, staging_path
    from panst3r_engine.pipeline.assemble import build_bundle

    progress("write_bundle", 0.0)
    staging = staging_path(out_dir)
    try:
        result = build_bundle(staging, photos, views, cameras, panoptic, vocab, raw, loaded, options, method,
                              dict(progress.timings), __version__)
        progress("write_bundle", 1.0)
        if options.splats:
            from panst3r_engine.splats import add_splats_to_bundle

            add_splats_to_bundle(staging, steps=options.splat_steps, device=str(loaded.device), progress=progress)
        result.bundle = publish_bundle(staging, out_dir, overwrite=options.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.timings = dict(progress.timings)
    return result


def _vocabulary(loaded: LoadedModel, options: JobOptions, progress: Progress):
    from panst3r_engine.vocab.embeddings import resolve_class_embeddings

    progress("vocabulary", 0.0)
    vocab = resolve_class_embeddings(options.vocab, options.vocab_embeddings, loaded.model.text_dim, options.seed)
    progress("vocabulary", 1.0, f"{len(vocab.names)} classes")
    return vocab


def _keyframes(num_photos: int, requested: int | None) -> int:
    return min(num_photos, requested or DEFAULT_MAX_KEYFRAMES)


def _check_memory(loaded: LoadedModel, photos: list[Photo], num_keyframes: int, options: JobOptions) -> None:
    from panst3r_engine.pipeline.memory import check_fits

    sizes = [tuple(p.tensor.shape[-2:]) for p in photos]
    check_fits(loaded.model, sizes, num_keyframes, loaded.device, options.max_batch)


def _infer(loaded: LoadedModel, photos: list[Photo], text: torch.Tensor, num_keyframes: int,
           options: JobOptions, progress: Progress) -> RawOutputs:
    """Run the network; a lone photo is paired with itself, as the official demo does."""
    tensors = [p.tensor for p in photos]
    single = len(tensors) == 1
    if single:
        tensors = tensors * 2
    raw = run_inference(loaded.model, tensors, text, num_keyframes=2 if single else num_keyframes,
                        max_batch=options.max_batch, progress=progress, amp=options.amp)
    if single:
        raw.pointmaps_raw, raw.pred_masks, raw.true_shapes = raw.pointmaps_raw[:1], raw.pred_masks[:1], raw.true_shapes[:1]
        raw.keyframes = [0]
    for i, photo in enumerate(photos):  # back to each photo's own orientation
        raw.pointmaps_raw[i] = to_photo_orientation(raw.pointmaps_raw[i], photo.transposed, (0, 1))
        raw.pred_masks[i] = to_photo_orientation(raw.pred_masks[i], photo.transposed, (1, 2))
        raw.true_shapes[i] = (photo.rgb.shape[0], photo.rgb.shape[1])
    return raw


def _postprocess(raw: RawOutputs, method: str, seed: int, progress: Progress):
    from panst3r_engine.postprocess import postprocess

    progress("postprocess", 0.0, method)
    result = postprocess(raw.pred_logits, raw.pred_masks, raw.true_shapes, method=method, seed=seed)
    progress("postprocess", 1.0, f"{len(result.segments)} segments")
    return result


def _cameras(raw: RawOutputs, progress: Progress):
    views, cameras = [], []
    for i, pointmap in enumerate(raw.pointmaps_raw):
        pts3d, local, conf = activate_pointmaps(pointmap.float())
        view = ViewGeometry(pts3d.numpy(), local.numpy(), conf.numpy())
        views.append(view)
        cameras.append(recover_camera(view))
        progress("cameras", (i + 1) / len(raw.pointmaps_raw))
    return views, cameras


def options_dict(options: JobOptions) -> dict:
    return asdict(options)

