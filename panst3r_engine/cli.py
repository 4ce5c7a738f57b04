"""Command line: ``python -m panst3r_engine run | weights``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from panst3r_engine import __version__


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the network on photos")
    p.add_argument("images", nargs="+", help="photo files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", required=True, help="checkpoint file (.pth, official layout)")
    p.add_argument("--vocab-embeddings", required=True, help=".npz with 'names' [C] and 'embeddings' [C, D]")
    p.add_argument("--keyframes", type=int, default=None, help="number of keyframes (default: all views)")
    p.add_argument("--resize", choices=["none"], default="none",
                   help="'none': use photos as they are (sides must be multiples of 16)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--max-batch", type=int, default=1, help="views per backbone call (outputs do not depend on it)")
    p.add_argument("--save-raw", action="store_true", help="write OUT/raw.npz with the raw network outputs")
    p.set_defaults(func=cmd_run)


def _add_weights(sub) -> None:
    p = sub.add_parser("weights", help="manage checkpoints")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    r = wsub.add_parser("random", help="write a checkpoint with random weights in the official layout")
    r.add_argument("--size", choices=["tiny", "full"], default="tiny")
    r.add_argument("--version", choices=["v1", "v2"], default="v2")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_weights_random)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m panst3r_engine", description=__doc__)
    parser.add_argument("--version", action="version", version=f"panst3r_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_weights(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from panst3r_engine.checkpoints import load_model
    from panst3r_engine.devices import resolve_device
    from panst3r_engine.images import load_unresized
    from panst3r_engine.model.inference import run_inference
    from panst3r_engine.raw import raw_arrays, save_raw
    from panst3r_engine.vocab import load_embeddings

    device = resolve_device(args.device)
    images = load_unresized(args.images)
    if args.keyframes is not None and args.keyframes < 1:
        raise CliError("--keyframes must be at least 1")
    started = time.perf_counter()
    model, info = load_model(args.weights, device=device)
    vocab = load_embeddings(args.vocab_embeddings, expected_dim=model.text_dim)
    print(f"loaded {info.config.version} model from {info.path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    def progress(stage: str, fraction: float) -> None:
        print(f"\r{stage:<18} {fraction * 100:5.1f}%", end="\n" if fraction >= 1 else "", file=sys.stderr)

    started = time.perf_counter()
    outputs = run_inference(model, [im.tensor for im in images], vocab.vectors, num_keyframes=args.keyframes,
                            max_batch=args.max_batch, progress=progress)
    print(f"network: {len(images)} views in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.save_raw:
        path = save_raw(out / "raw.npz", raw_arrays(outputs, vocab.names))
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_weights_random(args: argparse.Namespace) -> int:
    from panst3r_engine.checkpoints import write_random_checkpoint

    path = write_random_checkpoint(args.out, args.version, args.size, args.seed)
    print(f"wrote {args.size} {args.version} checkpoint with random weights to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from panst3r_engine.checkpoints import CheckpointError
    from panst3r_engine.images import ImageError
    from panst3r_engine.vocab import VocabularyError

    try:
        return args.func(args)
    except (CliError, CheckpointError, ImageError, VocabularyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
