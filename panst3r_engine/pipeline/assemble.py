"""The last pipeline stage: collect cameras, points and segments into a result bundle."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from panst3r_engine.bundle.write import make_stems, write_bundle
from panst3r_engine.pipeline.points import collect_points
from panst3r_engine.vocab.colors import class_color, instance_color


def _images(photos, stems, keyframes) -> list[dict]:
    return [{"index": i, "file": p.path.name, "stem": stem, "original_size": list(p.original_size),
             "processed_size": list(p.processed_size), "crop_box": list(p.crop_box), "keyframe": i in keyframes,
             "transposed_for_network": p.transposed}
            for i, (p, stem) in enumerate(zip(photos, stems))]


def _cameras(cameras, views) -> list[dict]:
    out = []
    for i, ((K, pose, focal, ok), view) in enumerate(zip(cameras, views)):
        out.append({"image": i, "K": np.asarray(K).tolist(), "cam_to_world": np.asarray(pose).tolist(),
                    "focal": float(focal), "confidence": float(np.median(view.conf)), "valid": ok})
    return out


def _classes(vocab) -> list[dict]:
    isthing = getattr(vocab, "isthing", None) or [True] * len(vocab.names)
    return [{"id": c, "name": name, "color": list(class_color(name)), "isthing": bool(thing)}
            for c, (name, thing) in enumerate(zip(vocab.names, isthing))]


def _segments(panoptic) -> list[dict]:
    out = []
    for seg in panoptic.segments:
        sid = int(seg["id"])
        out.append({"id": sid, "class_id": int(seg["category_id"]),
                    "score": float(seg.get("score", seg.get("class_prob", 0.0))),
                    "query": int(seg.get("query", seg.get("query_id", -1))), "color": list(instance_color(sid))})
    return out


def build_bundle(out_dir: Path, photos, views, cameras, panoptic, vocab, raw, loaded, options, method: str,
                 timings: dict, version: str):
    """Write the bundle atomically and return a :class:`~panst3r_engine.pipeline.JobResult`."""
    from panst3r_engine.pipeline.run import JobResult

    stems = make_stems([p.path.name for p in photos])
    points = collect_points(views, [p.rgb for p in photos], panoptic.pan, options.conf_threshold)
    manifest = {
        "engine": {"name": "panst3r_engine", "version": version},
        "model": {"id": loaded.model_id, "version": loaded.config.version, "checkpoint_md5": loaded.md5},
        "options": {**asdict(options), "postprocess": method, "keyframes_used": list(raw.keyframes)},
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "images": _images(photos, stems, set(raw.keyframes)),
        "cameras": _cameras(cameras, views),
        "classes": _classes(vocab),
        "segments": _segments(panoptic),
    }
    extra = {}
    with tempfile.TemporaryDirectory(prefix="panst3r-raw-") as tmp:
        if options.save_raw:
            from panst3r_engine.bundle.raw import raw_arrays, save_npz

            extra["raw.npz"] = save_npz(Path(tmp) / "raw.npz", raw_arrays(raw, vocab.names))
        path = write_bundle(out_dir, manifest, points.arrays(), dict(zip(stems, panoptic.pan)),
                            {s: p.rgb for s, p in zip(stems, photos)}, extra_files=extra)
    labelled = int((points.segment > 0).sum())
    return JobResult(path, manifest, timings, num_points=len(points.segment), num_labelled=labelled)
