"""Command line: ``python -m panst3r_engine run | postprocess | export | weights | serve | eval | train``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from panst3r_engine import __version__
from panst3r_engine.errors import Cancelled, OptionsError, PanSt3RError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


class CliError(OptionsError):
    """A user-facing failure of the command line: printed as one line, exit code 2."""


def expand_photos(items: list[str]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted by name); checked before any model loads."""
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CliError(f"{path}: no images in this folder; give photo files or a folder of photos")
            out.extend(found)
        elif not path.exists():
            raise CliError(f"{path}: no such file or folder; check the photo path")
        elif not path.is_file():
            raise CliError(f"{path}: not a regular file; give photo files or a folder of photos")
        else:
            out.append(path)
    return out


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="photos -> panoptic 3D result bundle")
    p.add_argument("photos", nargs="+", help="photo files or folders of photos")
    p.add_argument("--out", required=True, help="bundle folder to create")
    add_job_options(p)
    p.add_argument("--json-progress", action="store_true", help="progress as JSON lines on stdout")
    p.set_defaults(func=cmd_run)


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """One flag per JobOptions field (``seed`` -> ``--seed``), from the field's metadata and default."""
    from panst3r_engine.pipeline.options import option_fields

    for name, f in option_fields().items():
        meta, flag = f.metadata, "--" + name.replace("_", "-")
        if meta["type"] is bool:
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, help=meta["help"])
        else:
            parser.add_argument(flag, type=meta["type"], default=f.default, choices=meta["choices"], help=meta["help"])


def _add_postprocess(sub) -> None:
    p = sub.add_parser("postprocess", help="re-run only the post-processing on a saved raw.npz")
    p.add_argument("raw", help="raw.npz written by 'run --save-raw'")
    from panst3r_engine.pipeline.options import MAX_SEED, POSTPROCESS_METHODS

    p.add_argument(
        "--method", choices=POSTPROCESS_METHODS, default="standard_v2", help="segment merging (default standard_v2)"
    )
    p.add_argument("--seed", type=int, default=0, help=f"seed for the QUBO restarts, 0 to {MAX_SEED} (default 0)")
    p.add_argument("--out", required=True, help="folder for panoptic.npz (created if missing)")
    p.set_defaults(func=cmd_postprocess)


def _add_export(sub) -> None:
    from panst3r_engine.bundle.convert import FORMATS

    p = sub.add_parser("export", help="a result bundle -> COLMAP, nerfstudio, PLY, GLB, COCO panoptic or layout")
    p.add_argument("bundle", help="the result bundle folder (written by 'run')")
    p.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    p.add_argument("--out", required=True, help="folder to write (new or empty, unless --overwrite)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder, replacing only the files the export writes",
    )
    p.add_argument("--y-up", action="store_true", help="ply: a Y-up frame (x, -y, -z) instead of OpenCV axes")
    p.set_defaults(func=cmd_export)


def _add_weights(sub) -> None:
    from panst3r_engine.weights.cli import add_weights_commands

    p = sub.add_parser("weights", help="list, download, verify checkpoints; write random ones")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    add_weights_commands(wsub)
    r = wsub.add_parser("random", help="write a checkpoint with random weights in the official layout")
    r.add_argument(
        "--size",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny: a few MB, for tests; full: the real architecture, about 3.5 GB (default tiny)",
    )
    r.add_argument("--version", choices=["v1", "v2"], default="v2", help="checkpoint layout to imitate (default v2)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    r.add_argument("--out", required=True, help="checkpoint file to write (.pth)")
    r.add_argument(
        "--retrieval",
        action="store_true",
        help="also write a random MUSt3R retrieval head for its encoder, and its codebook, beside OUT "
        "(OUT_retrieval_trainingfree.pth, for run --retrieval)",
    )
    r.set_defaults(func=cmd_weights_random)


def _add_serve(sub) -> None:
    from panst3r_engine.service.server import add_serve_command

    add_serve_command(sub)


def _add_eval(sub) -> None:
    from panst3r_engine.eval.cli import add_eval_commands

    add_eval_commands(sub)


def _add_train(sub) -> None:
    from panst3r_engine.train.cli import add_train_command

    add_train_command(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m panst3r_engine", description="PanSt3R engine: unordered photos -> 3D panoptic scene."
    )
    parser.add_argument("--version", action="version", version=f"panst3r_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_postprocess(sub)
    _add_export(sub)
    _add_weights(sub)
    _add_serve(sub)
    _add_eval(sub)
    _add_train(sub)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill``) ends a run as Ctrl-C does: the job stops and leaves nothing behind."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def cmd_run(args: argparse.Namespace) -> int:
    """Check options and photos first (instant errors), then import torch and run."""
    from dataclasses import fields

    from panst3r_engine.pipeline.options import JobOptions

    options = JobOptions(**{f.name: getattr(args, f.name) for f in fields(JobOptions)}).validate()
    photos = expand_photos(args.photos)
    from panst3r_engine.pipeline.progress import JsonProgress, TextProgress
    from panst3r_engine.pipeline.run import run_job

    progress = JsonProgress() if args.json_progress else TextProgress()
    _interrupt_on_sigterm()
    started = time.perf_counter()
    result = run_job(photos, args.out, options, progress)
    if args.json_progress:
        import json

        print(
            json.dumps(
                {
                    "event": "done",
                    "bundle": str(result.bundle),
                    "segments": len(result.manifest["segments"]),
                    "seconds": round(time.perf_counter() - started, 3),
                }
            ),
            flush=True,
        )
    else:
        print_summary(result, time.perf_counter() - started)
    return 0


def print_summary(result, seconds: float, stream=sys.stdout) -> None:
    """Segments per class, points, warnings and time per stage (the manifest's timings, then writing it)."""
    manifest = result.manifest
    names = {c["id"]: c["name"] for c in manifest["classes"]}
    per_class = Counter(names.get(s["class_id"], "?") for s in manifest["segments"])
    w = stream.write
    w(f"\nbundle: {result.bundle}\n")
    w(
        f"photos: {len(manifest['images'])}   keyframes: {len(manifest['options']['keyframes_used'])}   "
        f"post-processing: {manifest['options']['postprocess']}\n"
    )
    w(f"points: {result.num_points} (labelled {result.num_labelled})   segments: {len(manifest['segments'])}\n\n")
    if per_class:
        w(f"{'class':<28}{'segments':>9}\n")
        for name, count in per_class.most_common():
            w(f"{name:<28}{count:>9}\n")
        w("\n")
    for warning in manifest.get("warnings", []):
        w(f"warning: {warning}\n")
    if manifest.get("warnings"):
        w("\n")
    w(f"{'stage':<20}{'seconds':>9}\n")
    for stage, secs in manifest["timings"].items():
        w(f"{stage:<20}{secs:>9.2f}\n")
    if "write_bundle" in result.timings:
        w(f"{'write_bundle':<20}{result.timings['write_bundle']:>9.2f}\n")
    w(f"{'total':<20}{seconds:>9.2f}\n")


def cmd_postprocess(args: argparse.Namespace) -> int:
    from panst3r_engine.pipeline.options import check_value

    check_value("seed", args.seed)
    from panst3r_engine.bundle.raw import load_raw, save_npz
    from panst3r_engine.postprocess.from_raw import postprocess_raw

    raw = load_raw(args.raw)
    started = time.perf_counter()
    arrays = postprocess_raw(raw, method=args.method, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "panoptic.npz", arrays)
    print(
        f"{args.method}: {len(arrays['segment_ids'])} segments in {time.perf_counter() - started:.2f} s "
        f"-> {out / 'panoptic.npz'}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from panst3r_engine.bundle.convert import export_bundle

    result = export_bundle(args.bundle, args.to, args.out, overwrite=args.overwrite, y_up=args.y_up)
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"{result.format}: {result.views} images, {result.points} points -> {result.path}")
    return 0


def cmd_weights_random(args: argparse.Namespace) -> int:
    from panst3r_engine.model.checkpoints import write_random_checkpoint

    path = write_random_checkpoint(args.out, args.version, args.size, args.seed)
    print(f"wrote {args.size} {args.version} checkpoint with random weights to {path}")
    if args.retrieval:
        from panst3r_engine.model.configs import model_config
        from panst3r_engine.model.retrieval import write_random_retrieval

        dim, tiny = model_config(args.version, tiny=args.size == "tiny").encoder.dim, args.size == "tiny"
        head = path.with_name(f"{path.stem}_retrieval_trainingfree.pth")
        write_random_retrieval(head, dim, (32,) if tiny else (1024,), 32 if tiny else 8192, seed=args.seed)
        print(f"wrote a random retrieval head to {head} (codebook beside it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 a problem the message explains, 130 cancelled; a bug keeps its traceback (exit 1)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version (0) or a bad flag (2, already explained)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
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
