"""Fine-tuning evidence: held-out PQ^scene / mIoU before and after training the panoptic decoder.

    .venv/bin/python benchmarks/bench_train.py [--scenes 6] [--heldout 2] [--steps 500] [--out DIR]
    .venv/bin/python benchmarks/bench_train.py --full-size [--views 2] [--size 512x384] [--steps 3]

Renders seeded synthetic rooms with Blender (``eval make-scene --fast``; reused when ``--out``
already holds them), writes a tiny random v2 checkpoint, trains its panoptic decoder on the first
``scenes - heldout`` rooms and scores the untrained checkpoint, the trained one and a
majority-class baseline on the held-out rooms through ``eval run``'s code. Also measures one
training step with and without the frozen-feature cache, and the cache's size.

``--full-size`` instead times training steps of the real-size v2 panoptic decoder (random weights, no
file needed) on one sample of 2 views at 512x384 from cached backbone features (random features of
the real width: the backbones are frozen, so a step never runs them), with the paper's loss points,
and reports the time per step and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_scenes(folder: Path, count: int, views: int, width: int, height: int) -> list[Path]:
    from panst3r_engine.eval.synthetic import generate_scene

    out = []
    for seed in range(count):
        path = folder / f"room_{seed}"
        if not (path / "scene.json").is_file():
            generate_scene(path, seed=100 + seed, num_views=views, width=width, height=height, fast=True)
        out.append(path)
    return out


def experiment(
    scenes: list[Path],
    heldout: int,
    out: Path,
    steps: int,
    lr: float,
    log=print,
    timing: bool = True,
    views: int = 8,
) -> dict:
    """Train on all but the last ``heldout`` scenes; returns the table's rows (and step timings)."""
    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.train.evaluate import evaluate_checkpoint, majority_baseline
    from panst3r_engine.train.loop import Trainer
    from panst3r_engine.train.options import TrainOptions

    train_scenes, test_scenes = scenes[:-heldout], scenes[-heldout:]
    init = write_random_checkpoint(out / "tiny_v2.pth", "v2", "tiny", seed=5)
    opts = TrainOptions(
        datasets=tuple(map(str, train_scenes)),
        init=str(init),
        out=str(out / "run"),
        steps=steps,
        device="cpu",
        resize="none",
        vocab_embeddings="random",
        lr=lr,
        batch_size=1,
        accum=1,
        views=views,
        num_points=1024,
        save_every=steps,
        log_every=max(1, steps // 10),
    )
    started = time.perf_counter()
    final = Trainer(opts, log=log).run()
    train_s = time.perf_counter() - started
    embeddings = str(out / "run" / "classes.npz")
    majority = majority_baseline([read_scene(p) for p in train_scenes], [read_scene(p) for p in test_scenes])
    rows = {
        "majority class": majority,
        "untrained decoder": evaluate_checkpoint(init, test_scenes, embeddings, out / "eval_before"),
        f"trained ({steps} steps)": evaluate_checkpoint(final, test_scenes, embeddings, out / "eval_after"),
    }
    return {"rows": rows, "train_s": train_s, **(step_times(opts, out) if timing else {})}


def step_times(opts, out: Path) -> dict:
    """Median seconds of a training step with the warm feature cache and without it."""
    import statistics

    from panst3r_engine.train.loop import Trainer

    result = {}
    for label, use_cache in (("cached", True), ("uncached", False)):
        trainer = Trainer(
            replace(opts, out=str(out / f"timing_{label}"), use_cache=use_cache, cache_dir=str(out / "run" / "cache")),
            log=lambda line: None,
        )
        trainer.setup()
        times = [trainer.step(i).seconds for i in range(3)]
        result[f"step_s_{label}"] = statistics.median(times)
        if use_cache:
            result["cache_mib"] = trainer.cache.size_bytes() / 2**20
            result["samples"] = len(trainer.samples)
    return result


def full_size_steps(views: int, width: int, height: int, steps: int, num_points: int, classes: int = 100) -> dict:
    """Seconds per training step (forward, Mask2Former loss, backward, AdamW) of the full-size v2 decoder."""
    import resource
    import statistics

    import torch

    from panst3r_engine.model.configs import model_config
    from panst3r_engine.model.panoptic_decoder import PanopticDecoder
    from panst3r_engine.train.loop import DecoderBatch
    from panst3r_engine.train.losses import LossConfig, PanopticCriterion, Targets
    from panst3r_engine.train.schedule import make_optimizer

    torch.manual_seed(0)
    cfg = model_config("v2")
    patch = cfg.encoder.patch_size
    decoder = PanopticDecoder(cfg.panoptic, cfg.concat_dim, patch).train()
    step_fn = DecoderBatch(decoder, None)
    rows, cols = height // patch, width // patch
    grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    tokens = torch.randn(views, rows * cols, cfg.concat_dim)  # what the feature cache holds for one sample
    pos = grid[None].expand(views, -1, -1).contiguous()
    images = torch.rand(views, 3, height, width) * 2 - 1
    text = torch.nn.functional.normalize(torch.randn(classes, cfg.panoptic.mask_transformer.lang_dim), dim=-1)
    segments = torch.zeros(views, height, width, dtype=torch.long)  # 4 bands x 3 columns: 12 segments per view
    for s in range(12):
        segments[:, (s // 3) * height // 4 : (s // 3 + 1) * height // 4, (s % 3) * width // 3 :] = s
    masks = (segments[None] == torch.arange(12)[:, None, None, None]).float()
    targets = Targets(masks, torch.randint(0, classes, (12,)))
    criterion = PanopticCriterion(LossConfig(num_points=num_points))
    optimizer = make_optimizer(decoder, 1e-4, 0.05)
    times, cpu = [], []
    for i in range(steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        outputs = step_fn([(tokens, pos, images)], text)
        loss = criterion(outputs, [targets], torch.Generator().manual_seed(i))["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)  # all threads: steadier than wall time on a shared machine
    return {
        "cpu_s": cpu,
        "parameters_m": sum(p.numel() for p in decoder.parameters()) / 1e6,
        "step_s": times,
        "median_s": statistics.median(times),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }


def print_table(result: dict, stream=sys.stdout) -> None:
    def fmt(x):
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    stream.write(f"\n{'held-out scenes':<24}{'PQ':>7}{'PQ(all)':>9}{'mIoU':>7}\n")
    for name, row in result["rows"].items():
        stream.write(f"{name:<24}{fmt(row['pq']):>7}{fmt(row['pq_all']):>9}{fmt(row['miou']):>7}\n")
    stream.write(
        f"\ntraining: {result['train_s']:.1f} s; step with cache {result['step_s_cached']:.2f} s, "
        f"without {result['step_s_uncached']:.2f} s; cache {result['cache_mib']:.2f} MiB for "
        f"{result['samples']} samples\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--heldout", type=int, default=2)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-views", type=int, default=2, help="views per training sample")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--full-size", action="store_true", help="time steps of the real-size v2 decoder instead")
    p.add_argument("--size", default="512x384", help="--full-size: W x H of each view (multiples of 16)")
    p.add_argument("--num-points", type=int, default=12_288, help="--full-size: loss points per mask and view")
    a = p.parse_args(argv)
    if a.full_size:
        width, height = (int(v) for v in a.size.lower().split("x"))
        steps = a.steps if a.steps != p.get_default("steps") else 3
        r = full_size_steps(a.train_views, width, height, steps, a.num_points)
        print(
            f"full-size v2 decoder ({r['parameters_m']:.1f} M trainable parameters), {a.train_views} views of "
            f"{width}x{height}, cached features, {a.num_points} loss points, CPU fp32, {r['threads']} threads\n"
            f"step seconds: {', '.join(f'{t:.2f}' for t in r['step_s'])} (median {r['median_s']:.2f}); "
            f"CPU seconds (all threads): {', '.join(f'{t:.2f}' for t in r['cpu_s'])}; "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        return 0
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-train-"))
    scenes = make_scenes(out / "scenes", a.scenes, a.views, a.width, a.height)
    for sub in ("run", "timing_cached", "timing_uncached"):
        if (out / sub).exists():
            raise SystemExit(f"{out / sub} exists from an earlier benchmark; give a fresh --out")
    print_table(experiment(scenes, a.heldout, out, a.steps, a.lr, views=a.train_views))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
