"""``python -m panst3r_engine train DATASET... --init v2|CKPT --out RUN_DIR``: fine-tune the panoptic decoder."""

from __future__ import annotations

import argparse
import os

from panst3r_engine.train.options import AMP_MODES, RESIZE_MODES, TrainOptions

HELP = "train the panoptic decoder on your own scenes and classes (backbones frozen)"


def add_train_command(subparsers) -> argparse.ArgumentParser:
    d = TrainOptions(datasets=(), init="", out="")
    p = subparsers.add_parser("train", help=HELP, description=HELP)
    p.add_argument("datasets", nargs="+", help="scene folders (eval make-scene format, or Panoptic Lifting scenes)")
    p.add_argument("--init", required=True, help="starting weights: v1, v2 (registry) or a .pth checkpoint")
    p.add_argument("--out", required=True, help="run folder for checkpoints, logs and the feature cache")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda (default auto)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--min-lr", type=float, default=d.min_lr, help=f"final learning rate (default {d.min_lr:g})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (default 0.05)")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default steps/40)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per micro-batch (default 2)")
    p.add_argument("--accum", type=int, default=d.accum, help="micro-batches per optimiser step (default 2)")
    p.add_argument("--views", type=int, default=d.views, help="views per sample (default 5)")
    p.add_argument("--resize", choices=RESIZE_MODES, default=d.resize, help="photo processing, as for run")
    p.add_argument("--num-points", type=int, default=d.num_points, help="loss points per mask and view")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of sample order and loss points (default {d.seed})")
    p.add_argument("--save-every", type=int, default=d.save_every, help="write last.pth every N steps")
    p.add_argument("--log-every", type=int, default=d.log_every, help="progress line every N steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pth")
    p.add_argument(
        "--vocab-embeddings",
        default=None,
        help="class embeddings: default the SigLIP text tower (weights download siglip-text); "
        "'random' for smoke runs; or an .npz with names and embeddings",
    )
    p.add_argument("--cache-dir", default=None, help="frozen-feature cache (default RUN_DIR/cache)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="recompute backbone features each step")
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp, help="CUDA autocast: auto (bf16, else fp16), off")
    p.add_argument("--val", nargs="+", default=(), help="validation scene folders, scored with eval run's code")
    p.add_argument("--val-every", type=int, default=0, help="score --val every N steps and keep best.pth (0: never)")
    p.set_defaults(func=cmd_train)
    return p


def _train_maybe_distributed(opts: TrainOptions):
    """Under ``torchrun`` (WORLD_SIZE > 1): one process group (gloo on CPU, nccl on CUDA) around the run."""
    from dataclasses import replace

    import torch
    import torch.distributed as dist

    from panst3r_engine.train.loop import train

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return train(opts)
    cuda = opts.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            opts = replace(opts, device=f"cuda:{local}")
        return train(opts)
    finally:
        dist.destroy_process_group()


def cmd_train(args: argparse.Namespace) -> int:
    opts = TrainOptions(
        datasets=tuple(args.datasets),
        init=args.init,
        out=args.out,
        steps=args.steps,
        device=args.device,
        lr=args.lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        batch_size=args.batch_size,
        accum=args.accum,
        views=args.views,
        resize=args.resize,
        num_points=args.num_points,
        seed=args.seed,
        save_every=args.save_every,
        log_every=args.log_every,
        resume=args.resume,
        vocab_embeddings=args.vocab_embeddings,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        amp=args.amp,
        val=tuple(args.val),
        val_every=args.val_every,
    ).validate()
    path = _train_maybe_distributed(opts)
    if path is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"trained checkpoint: {path} (it stores its classes and their text embeddings)")
        print(f"use it with: run PHOTOS --weights {path} --out BUNDLE (its own classes are the default vocabulary)")
    return 0
