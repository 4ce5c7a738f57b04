"""The last stage: a :class:`Reconstruction` and the job's metadata become the bundle's files, written once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from panst3r_engine.bundle.write import make_stems, write_bundle_files
from panst3r_engine.pipeline.reconstruction import Reconstruction
from panst3r_engine.vocab.colors import class_colors, instance_color


@dataclass
class JobMeta:
    """What the manifest says about the job rather than the scene."""

    engine_version: str
    model: dict  # {"id", "version", "checkpoint_md5"}
    options: dict  # the options used, as plain JSON values
    timings: dict[str, float]  # seconds per stage
    warnings: list[str] = field(default_factory=list)
    splats: dict | None = None  # manifest["splats"] when splats.ply is written


def _images(recon: Reconstruction, stems: list[str]) -> list[dict]:
    keyframes = set(recon.keyframes)
    sources = recon.sources or [None] * len(recon.photos)
    images = []
    for i, (p, stem, source) in enumerate(zip(recon.photos, stems, sources)):
        entry = {
            "index": i,
            "file": p.path.name,
            "stem": stem,
            "original_size": list(p.original_size),
            "processed_size": list(p.processed_size),
            "crop_box": list(p.crop_box),
            "keyframe": i in keyframes,
            "transposed_for_network": p.transposed,
        }
        if source is not None:
            entry["video"] = source
        images.append(entry)
    return images


def _cameras(recon: Reconstruction) -> list[dict]:
    return [
        {
            "image": i,
            "K": cam.K.tolist(),
            "cam_to_world": cam.cam_to_world.tolist(),
            "focal": cam.focal,
            "confidence": cam.confidence,
            "valid": cam.valid,
        }
        for i, cam in enumerate(recon.cameras)
    ]


def _classes(recon: Reconstruction) -> list[dict]:
    isthing = recon.vocab.isthing or [True] * len(recon.vocab.names)
    colors = class_colors(recon.vocab.names, {s.class_id for s in recon.segments}, recon.vocab.source)
    return [
        {"id": c, "name": name, "color": list(color), "isthing": bool(thing)}
        for c, (name, thing, color) in enumerate(zip(recon.vocab.names, isthing, colors))
    ]


def _segments(recon: Reconstruction) -> list[dict]:
    return [
        {"id": s.id, "class_id": s.class_id, "score": s.score, "query": s.query, "color": list(instance_color(s.id))}
        for s in recon.segments
    ]


def build_manifest(recon: Reconstruction, meta: JobMeta, stems: list[str]) -> dict:
    """The manifest's content; the writer fills the derived fields (point counts, boxes, panoptic entries)."""
    manifest = {
        "engine": {"name": "panst3r_engine", "version": meta.engine_version},
        "model": meta.model,
        "options": {**meta.options, "postprocess": recon.postprocess, "keyframes_used": list(recon.keyframes)},
        "timings": {k: round(v, 4) for k, v in meta.timings.items()},
        "images": _images(recon, stems),
        "cameras": _cameras(recon),
        "classes": _classes(recon),
        "segments": _segments(recon),
        "warnings": list(meta.warnings),
    }
    if meta.splats is not None:
        manifest["splats"] = meta.splats
    return manifest


def build_bundle(
    folder: Path, recon: Reconstruction, meta: JobMeta, files: Mapping[str, Callable[[Path], object]] | None = None
) -> dict:
    """Write the bundle's files into ``folder`` (empty, private; published by the caller); returns the manifest.

    ``files``: extra bundle files (``splats.ply``, ``raw.npz``) as functions that write them in place.
    """
    stems = make_stems([p.path.name for p in recon.photos])
    return write_bundle_files(
        folder,
        build_manifest(recon, meta, stems),
        recon.points.arrays(),
        dict(zip(stems, recon.panoptic)),
        {s: p.rgb for s, p in zip(stems, recon.photos)},
        files,
    )
