"""Photos in, panoptic 3D result bundle out: the engine's main job, read top to bottom as its stages.

The order is PanSt3R's (arXiv 2506.21348, §3): MUSt3R encodes every photo, builds its memory from the
keyframes (MUSt3R, arXiv 2503.01661, §3) and renders every view against it; the mask transformer decodes
the keyframes' queries, which then segment every view; post-processing merges the masks into panoptic
segments shared by all views. Cameras and points follow from the pointmaps; optional splats are fitted in
memory; the bundle is written once, in a private staging folder, and published with one rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from panst3r_engine import __version__
from panst3r_engine.bundle.raw import raw_arrays
from panst3r_engine.bundle.spec import RAW_FILE, SPLATS_FILE
from panst3r_engine.bundle.write import check_output_folder, publish_bundle, remove_stale_staging, staging_path
from panst3r_engine.errors import Cancelled, OptionsError
from panst3r_engine.model.inference import RawOutputs, activate_pointmaps, run_inference
from panst3r_engine.model.loading import LoadedModel, ModelCache
from panst3r_engine.pipeline.assemble import JobMeta, build_bundle
from panst3r_engine.pipeline.cameras import Camera, ViewGeometry, recover_camera
from panst3r_engine.pipeline.images import Photo, load_photos, to_photo_orientation
from panst3r_engine.pipeline.keyframes import KeyframeChooser
from panst3r_engine.pipeline.memory import check_disk, check_fits, release_free_memory, trimming
from panst3r_engine.pipeline.options import DEFAULT_MAX_KEYFRAMES, JobOptions
from panst3r_engine.pipeline.points import PointCloud, collect_points, confidence_warnings
from panst3r_engine.pipeline.progress import Progress, ProgressFn
from panst3r_engine.pipeline.reconstruction import JobResult, Reconstruction, Segment
from panst3r_engine.pipeline.video import expand_videos, is_video
from panst3r_engine.pipeline.viewstore import ViewStore
from panst3r_engine.postprocess import postprocess
from panst3r_engine.postprocess.common import LazyViews
from panst3r_engine.vocab.checkpoint import default_vocabulary
from panst3r_engine.vocab.embeddings import ClassEmbeddings, resolve_class_embeddings

log = logging.getLogger(__name__)

MASK_DTYPE = torch.float16  # mask logits on disk: half the bytes; see ViewStore for what the rounding can move


def run_job(
    photo_paths: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: JobOptions,
    progress: Progress | None = None,
    models: ModelCache | None = None,
) -> JobResult:
    """Run the whole pipeline; the bundle appears at ``out_dir`` only when complete."""
    options, progress, models, out_dir = (
        options.validate(),
        progress or Progress(),
        models or ModelCache(),
        Path(out_dir),
    )
    check_output_folder(out_dir, options.overwrite)
    remove_stale_staging(out_dir)
    if not photo_paths:
        raise OptionsError("no photos given")
    scratch = staging_path(out_dir)  # per-view data on disk; if the job is killed, remove_stale_staging clears it
    scratch.mkdir(parents=True)
    try:
        photos, sources, inputs = _load_images(photo_paths, options, progress, scratch)
        loaded = models.get(options.weights, options.device, progress)
        if options.vocab is None:  # recorded in the manifest as the vocabulary used
            options = replace(options, vocab=default_vocabulary(loaded.classes))
        vocab = _vocabulary(loaded, options, progress)
        keyframes, warnings = _keyframes(len(photos), options.keyframes)
        chooser = KeyframeChooser.for_job(options.keyframes_by, keyframes, options.seed, options.retrieval)
        sizes = [p.network_size for p in photos]
        check_disk(check_fits(loaded.model, sizes, keyframes, loaded.device, options.max_batch).scratch, out_dir)
        stores = {"inputs": inputs, **_stores(len(photos), scratch)}
        streamed = trimming(progress)  # keeps resident memory near what the job holds while views stream
        raw = _infer(loaded, photos, vocab.vectors, keyframes, chooser, options, streamed, stores)
        release_free_memory()
        method = options.postprocess or loaded.config.postprocess_default
        panoptic, segments = _postprocess(raw, method, options.seed, streamed)
        release_free_memory()
        cameras, points = _cameras(raw, photos, panoptic, options.conf_threshold, stores["conf"], streamed)
        warnings += confidence_warnings(stores["conf"], len(points.segment), options.conf_threshold)
        recon = Reconstruction(photos, cameras, points, panoptic, segments, vocab, list(raw.keyframes), method, sources)
        splats, splat_warnings = _splats(recon, options, loaded.device, progress)
        meta = JobMeta(
            __version__,
            _model_info(loaded),
            {**asdict(options), **chooser.used},
            dict(progress.timings),
            warnings + chooser.warnings + splat_warnings,
            splats[1] if splats else None,
        )
        return _write(out_dir, recon, meta, raw if options.save_raw else None, splats, options.overwrite, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stores(num_photos: int, scratch: Path) -> dict[str, ViewStore]:
    """Disk-backed per-view outputs: the network's (a lone photo is run as a pair) and the confidence maps."""
    count = max(num_photos, 2)
    return {
        "masks": ViewStore(count, scratch, MASK_DTYPE, "masks"),
        "pointmaps": ViewStore(count, scratch, torch.float32, "pointmaps"),
        "conf": ViewStore(num_photos, scratch, torch.float32, "conf"),
    }


def _load_images(
    paths: list, options: JobOptions, progress: Progress, scratch: Path
) -> tuple[list[Photo], list[dict | None], ViewStore]:
    """The photos (videos become their sampled frames), per photo the video frame it is (or None), and the
    photos' network inputs (float32, in ``scratch``: they are read again only by the network)."""
    progress("load_images", 0.0, f"{len(paths)} inputs")
    decoding = 0.5 if any(is_video(p) for p in paths) else 0.0  # the share of the stage's bar for decoding videos

    def decoded(fraction: float, message: str) -> None:
        progress("load_images", decoding * fraction, message)

    def loaded(fraction: float) -> None:  # before each photo
        release_free_memory()  # the inputs moved to disk leave holes between the photos kept
        progress("load_images", decoding + (1 - decoding) * fraction, f"{count} photos")

    with tempfile.TemporaryDirectory(prefix="panst3r-frames-") as frames_dir:  # removed also when cancelled
        paths, sources = expand_videos(list(paths), Path(frames_dir), options.video_frames, options.video_fps, decoded)
        count = len(paths)
        inputs = ViewStore(count, scratch, torch.float32, "inputs")
        photos = load_photos(paths, options.resize, inputs, loaded)
    progress("load_images", 1.0, f"{len(photos)} photos")
    return photos, sources, inputs


def _vocabulary(loaded: LoadedModel, options: JobOptions, progress: Progress) -> ClassEmbeddings:
    progress("vocabulary", 0.0)
    text_dim, name = loaded.model.text_dim, loaded.path.name
    vocab = resolve_class_embeddings(
        options.vocab, options.vocab_embeddings, text_dim, options.seed, checkpoint=loaded.classes, weights=name
    )
    progress("vocabulary", 1.0, f"{len(vocab.names)} classes")
    return vocab


def _keyframes(num_photos: int, requested: int | None) -> tuple[int, list[str]]:
    """Keyframe count (None or 0: all photos, at most DEFAULT_MAX_KEYFRAMES) and a warning when it was capped."""
    if not requested:
        return min(num_photos, DEFAULT_MAX_KEYFRAMES), []
    if requested > num_photos:
        return num_photos, [
            f"{requested} keyframes were asked for but there are only {num_photos} photos; "
            f"all {num_photos} are keyframes"
        ]
    return requested, []


def _infer(
    loaded: LoadedModel,
    photos: list[Photo],
    text: torch.Tensor,
    num_keyframes: int,
    chooser: KeyframeChooser,
    options: JobOptions,
    progress: ProgressFn,
    stores: dict[str, ViewStore],
) -> RawOutputs:
    """Run the network; a lone photo is paired with itself, as the official demo does.

    The inputs come from ``stores["inputs"]``; mask logits and pointmaps go to ``stores`` (on disk) as each view
    leaves the network.
    """
    tensors = stores["inputs"]  # read from disk when the network needs them
    single = len(tensors) == 1
    if single:
        tensors = [tensors[0]] * 2
    raw = run_inference(
        loaded.model,
        tensors,
        text,
        num_keyframes=2 if single else num_keyframes,
        keyframes=None if single else chooser,
        max_batch=options.max_batch,
        progress=progress,
        amp=options.amp,
        masks=stores["masks"],
        pointmaps=stores["pointmaps"],
    )
    if single:
        raw.pointmaps_raw.truncate(1)
        raw.pred_masks.truncate(1)
        raw.true_shapes = raw.true_shapes[:1]
        raw.keyframes = [0]
    for i, photo in enumerate(photos):  # back to each photo's own orientation
        if photo.transposed:
            raw.pointmaps_raw[i] = to_photo_orientation(raw.pointmaps_raw[i], photo.transposed, (0, 1))
            raw.pred_masks[i] = to_photo_orientation(raw.pred_masks[i], photo.transposed, (1, 2))
        raw.true_shapes[i] = (photo.rgb.shape[0], photo.rgb.shape[1])
    return raw


def _postprocess(
    raw: RawOutputs, method: str, seed: int, progress: ProgressFn
) -> tuple[list[np.ndarray], list[Segment]]:
    """Per-view panoptic maps and the segments they share."""
    progress("postprocess", 0.0, method)
    result = postprocess(
        raw.pred_logits, raw.pred_masks, raw.true_shapes, method=method, seed=seed, progress=progress
    )  # reports inside its loops, so a cancel stops it promptly
    segments = [
        Segment(int(s["id"]), int(s["category_id"]), float(s["score"]), int(s["query"])) for s in result.segments
    ]
    progress("postprocess", 1.0, f"{len(segments)} segments")
    return result.pan, segments


def _cameras(
    raw: RawOutputs,
    photos: list[Photo],
    panoptic: list[np.ndarray],
    threshold: float,
    conf_maps: ViewStore,
    progress: ProgressFn,
) -> tuple[list[Camera], PointCloud]:
    """Cameras and points, one view at a time (activated from the pointmaps on disk when needed, then dropped);
    every view's confidence map goes to ``conf_maps`` for :func:`confidence_warnings`."""
    views = LazyViews(lambda i: _activated(raw.pointmaps_raw[i]), len(photos))
    cameras = []
    for i in range(len(photos)):
        view = views[i]
        cameras.append(recover_camera(view))
        conf_maps[i] = torch.from_numpy(view.conf)
        progress("cameras", (i + 1) / len(photos))
    return cameras, collect_points(views, [p.rgb for p in photos], panoptic, threshold)


def _activated(pointmap: torch.Tensor) -> ViewGeometry:
    pts3d, local, conf = activate_pointmaps(pointmap.float())
    return ViewGeometry(pts3d.numpy(), local.numpy(), conf.numpy())


def _splats(
    recon: Reconstruction, options: JobOptions, device: torch.device, progress: Progress
) -> tuple[tuple | None, list[str]]:
    """((model, manifest entry) or None, warnings). Splats are optional: a failed fit never costs the job."""
    if not options.splats:
        return None, []
    from panst3r_engine.splats.fit import SplatInputs, device_budget, fit_inputs

    progress("splats", 0.0)
    inputs = SplatInputs(
        [p.path.name for p in recon.photos],
        [p.rgb for p in recon.photos],
        [(c.K, c.cam_to_world) for c in recon.cameras],
        recon.points.arrays(),
        {s.id: s.class_id for s in recon.segments},
    )
    try:
        result = fit_inputs(
            inputs,
            device=str(device),
            progress=progress,
            seed=options.seed,
            **device_budget(device, options.splat_steps),
        )
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - an optional stage: report it and keep the job's result
        log.warning("splat fit failed", exc_info=exc)
        reason = getattr(exc, "message", None) or f"the fit failed ({type(exc).__name__}: {exc})"
        progress("splats", 1.0, "skipped")
        return None, [f"splats were skipped: {reason}"]
    progress("splats", 1.0, f"{result.stats['count']} Gaussians")
    return (result.model, {"file": SPLATS_FILE, **result.stats}), []


def _model_info(loaded: LoadedModel) -> dict:
    return {"id": loaded.model_id, "version": loaded.config.version, "checkpoint_md5": loaded.md5}


def _write(
    out_dir: Path,
    recon: Reconstruction,
    meta: JobMeta,
    raw: RawOutputs | None,
    splats: tuple | None,
    overwrite: bool,
    progress: Progress,
) -> JobResult:
    """Write every file once into a private staging folder, then publish it with one rename."""
    progress("write_bundle", 0.0)
    files = {}
    if raw is not None:
        files[RAW_FILE] = lambda path: np.savez(path, **raw_arrays(raw, list(recon.vocab.names)))
    if splats is not None:
        from panst3r_engine.splats.export import write_splats_ply

        files[SPLATS_FILE] = lambda path: write_splats_ply(splats[0], path, atomic=False)
    staging = staging_path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        manifest = build_bundle(staging, recon, meta, files)
        progress("write_bundle", 1.0)
        bundle = publish_bundle(staging, out_dir, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    labelled = int((recon.points.segment > 0).sum())
    return JobResult(
        bundle,
        manifest,
        dict(progress.timings),
        num_points=len(recon.points.segment),
        num_labelled=labelled,
        warnings=list(meta.warnings),
    )
