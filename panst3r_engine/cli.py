"""Command line: ``python -m panst3r_engine run | postprocess | weights | serve | eval``."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from panst3r_engine import __version__
from panst3r_engine.errors import Cancelled, OptionsError, PanSt3RError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


class CliError(OptionsError):
    """A user-facing failure of the command line: printed as one line, exit code 2."""


def expand_photos(items: list[str]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted by name)."""
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"{path}: no images in this folder")
            out.extend(found)
        else:
            out.append(path)
    return out


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="photos -> panoptic 3D result bundle")
    p.add_argument("photos", nargs="+", help="photo files or folders of photos")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--weights", default="v2", help="v1, v2, a registry id, or a checkpoint path (default v2)")
    p.add_argument("--keyframes", type=int, default=None, help="number of keyframes (default: all photos, at most 50)")
    p.add_argument("--postprocess", choices=["standard_v1", "standard_v2", "qubo"], default=None,
                   help="segment merging (default: the checkpoint's own default)")
    p.add_argument("--vocab", default="scannetpp", help="scannetpp, coco, ade20k, or a file with one class per line")
    p.add_argument("--vocab-embeddings", default=None,
                   help="class text embeddings: an .npz (names + embeddings) or 'random' (smoke tests)")
    p.add_argument("--conf-threshold", type=float, default=3.0, help="keep points with confidence >= T (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--resize", choices=["512", "none"], default="512",
                   help="512: crop/resize like the official loader; none: use photos as they are (multiples of 16)")
    p.add_argument("--max-batch", type=int, default=1, help="views per backbone call (outputs do not depend on it)")
    p.add_argument("--seed", type=int, default=0, help="seed for QUBO restarts and random embeddings")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the MUSt3R decoder on CUDA")
    p.add_argument("--save-raw", action="store_true", help="also write OUT/raw.npz (raw network outputs)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--splats", action="store_true", help="also fit 3D Gaussians (OUT/splats.ply) for novel views")
    p.add_argument("--splat-steps", type=int, default=300, help="optimisation steps for --splats (default 300)")
    p.add_argument("--json-progress", action="store_true", help="progress as JSON lines on stdout")
    p.set_defaults(func=cmd_run)


def _add_postprocess(sub) -> None:
    p = sub.add_parser("postprocess", help="re-run only the post-processing on a saved raw.npz")
    p.add_argument("raw", help="raw.npz written by 'run --save-raw'")
    p.add_argument("--method", choices=["standard_v1", "standard_v2", "qubo"], default="standard_v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for panoptic.npz")
    p.set_defaults(func=cmd_postprocess)


def _add_weights(sub) -> None:
    from panst3r_engine.weights.cli import add_weights_commands

    p = sub.add_parser("weights", help="list, download, verify checkpoints; write random ones")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    add_weights_commands(wsub)
    r = wsub.add_parser("random", help="write a checkpoint with random weights in the official layout")
    r.add_argument("--size", choices=["tiny", "full"], default="tiny")
    r.add_argument("--version", choices=["v1", "v2"], default="v2")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_weights_random)


def _add_serve(sub) -> None:
    from panst3r_engine.service.server import add_serve_command

    add_serve_command(sub)


def _add_eval(sub) -> None:
    from panst3r_engine.eval.cli import add_eval_commands

    add_eval_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m panst3r_engine",
                                     description="PanSt3R engine: unordered photos -> 3D panoptic scene.")
    parser.add_argument("--version", action="version", version=f"panst3r_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_postprocess(sub)
    _add_weights(sub)
    _add_serve(sub)
    _add_eval(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from panst3r_engine.pipeline.options import JobOptions
    from panst3r_engine.pipeline.progress import JsonProgress, TextProgress
    from panst3r_engine.pipeline.run import run_job

    options = JobOptions(weights=args.weights, keyframes=args.keyframes, postprocess=args.postprocess,
                         vocab=args.vocab, vocab_embeddings=args.vocab_embeddings, conf_threshold=args.conf_threshold,
                         device=args.device, resize=args.resize, max_batch=args.max_batch, seed=args.seed,
                         save_raw=args.save_raw, amp=args.amp, overwrite=args.overwrite, splats=args.splats,
                         splat_steps=args.splat_steps).validate()
    photos = expand_photos(args.photos)
    progress = JsonProgress() if args.json_progress else TextProgress()
    started = time.perf_counter()
    result = run_job(photos, args.out, options, progress)
    if args.json_progress:
        import json

        print(json.dumps({"event": "done", "bundle": str(result.bundle), "segments": len(result.manifest["segments"]),
                          "seconds": round(time.perf_counter() - started, 3)}), flush=True)
    else:
        print_summary(result, time.perf_counter() - started)
    return 0


def print_summary(result, seconds: float, stream=sys.stdout) -> None:
    """Segments per class, points and time per stage, as a plain table."""
    manifest = result.manifest
    names = {c["id"]: c["name"] for c in manifest["classes"]}
    per_class = Counter(names.get(s["class_id"], "?") for s in manifest["segments"])
    w = stream.write
    w(f"\nbundle: {result.bundle}\n")
    w(f"photos: {len(manifest['images'])}   keyframes: {len(manifest['options']['keyframes_used'])}   "
      f"post-processing: {manifest['options']['postprocess']}\n")
    w(f"points: {result.num_points} (labelled {result.num_labelled})   segments: {len(manifest['segments'])}\n\n")
    if per_class:
        w(f"{'class':<28}{'segments':>9}\n")
        for name, count in per_class.most_common():
            w(f"{name:<28}{count:>9}\n")
        w("\n")
    w(f"{'stage':<20}{'seconds':>9}\n")
    for stage, secs in result.timings.items():
        w(f"{stage:<20}{secs:>9.2f}\n")
    w(f"{'total':<20}{seconds:>9.2f}\n")


def cmd_postprocess(args: argparse.Namespace) -> int:
    import numpy as np

    from panst3r_engine.bundle.raw import load_raw
    from panst3r_engine.postprocess import postprocess

    raw = load_raw(args.raw)
    shapes = raw["true_shape"].astype(int)
    masks = [raw["pred_masks"][v, :, : h // 2, : w // 2] for v, (h, w) in enumerate(shapes)]
    started = time.perf_counter()
    result = postprocess(raw["pred_logits"], masks, shapes, method=args.method, seed=args.seed)
    height, width = shapes[:, 0].max(), shapes[:, 1].max()
    pan = np.zeros((len(shapes), height, width), dtype=np.int32)
    conf = np.zeros((len(shapes), height, width), dtype=np.float32)
    for v, (h, w) in enumerate(shapes):
        pan[v, :h, :w], conf[v, :h, :w] = result.pan[v], result.conf[v]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from panst3r_engine.bundle.raw import save_npz

    save_npz(out / "panoptic.npz", {"pan": pan, "conf": conf, "true_shape": shapes.astype(np.int32),
                                    "segment_ids": np.array([s["id"] for s in result.segments], dtype=np.int32),
                                    "segment_classes": np.array([s["category_id"] for s in result.segments], dtype=np.int32)})
    print(f"{args.method}: {len(result.segments)} segments in {time.perf_counter() - started:.2f} s -> {out / 'panoptic.npz'}")
    return 0


def cmd_weights_random(args: argparse.Namespace) -> int:
    from panst3r_engine.model.checkpoints import write_random_checkpoint

    path = write_random_checkpoint(args.out, args.version, args.size, args.seed)
    print(f"wrote {args.size} {args.version} checkpoint with random weights to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 a problem the message explains, 130 cancelled; a bug keeps its traceback (exit 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PanSt3RError as exc:
        print(f"\nerror: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("\ncancelled; nothing was written", file=sys.stderr)
        return 130
