"""Full-size network forward: time, FLOPs and achieved rate per stage, and peak memory.

Usage: python benchmarks/bench_network.py [--version v1|v2] [--views 3] [--size 512x384] [--keyframes K]
       [--dtype fp32|bf16] [--threads N] [--max-batch B] [--repeats R] [--device cpu]

Weights are the parity fill rule (random but deterministic), so the numbers are
those of the real architecture; no checkpoint file is needed. At start it measures
the rate of a 4096x4096 fp32 matmul on the current thread count (best of a few);
every stage's achieved GFLOP/s is then given as a fraction of that rate. FLOPs are
counted by ``torch.utils.flop_counter.FlopCounterMode`` during a warm-up forward;
times are the best of ``--repeats`` forwards without the counter.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.devices import resolve_device  # noqa: E402
from panst3r_engine.model.checkpoints import random_state_dict  # noqa: E402
from panst3r_engine.model.configs import model_config  # noqa: E402
from panst3r_engine.model.inference import run_inference  # noqa: E402
from panst3r_engine.model.panst3r import PanSt3R  # noqa: E402

STAGES = ("MUSt3R encoder", "MUSt3R decoder", "DINOv2", "mixer + upscaler", "mask transformer")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of a ``size``-square matmul (2 n^3 FLOPs) on the current thread count."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        torch.matmul(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageMeter:
    """Wraps the model's stage entry points to add up wall time (and FLOPs while ``counting``) per stage."""

    def __init__(self, model: PanSt3R, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)
        self.counting = False
        pd = model.panoptic_decoder
        for stage, owner, name in (
            ("MUSt3R encoder", model.must3r_encoder, "forward"),
            ("MUSt3R decoder", model.must3r_decoder, "update"),
            ("MUSt3R decoder", model.must3r_decoder, "render"),
            ("DINOv2", model.dino_encoder, "forward"),
            ("mixer + upscaler", pd, "encode_views"),
            ("mask transformer", pd, "decode"),
            ("mask transformer", pd, "predict"),
        ):
            setattr(owner, name, self._wrap(stage, getattr(owner, name)))

    def _wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            _sync(self.device)
            started = time.perf_counter()
            if self.counting:
                with FlopCounterMode(display=False) as counter:
                    out = fn(*args, **kwargs)
                self.flops[stage] += counter.get_total_flops()
            else:
                out = fn(*args, **kwargs)
            _sync(self.device)
            self.seconds[stage] += time.perf_counter() - started
            return out

        return timed

    def reset(self) -> None:
        self.seconds.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=["v1", "v2"], default="v2")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--keyframes", type=int, default=None)
    parser.add_argument("--size", default="512x384", help="W x H of every view (multiples of 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: the opt-in autocast path")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--max-batch", type=int, default=None, help="run_inference's max_batch (default: its own)")
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards after the counting warm-up (best kept)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    rate = matmul_rate(device)
    rate_bf16 = matmul_rate(device, torch.bfloat16) if args.dtype == "bf16" else None

    started = time.perf_counter()
    cfg = model_config(args.version)
    with torch.device("meta"):
        model = PanSt3R(cfg)
    model.load_state_dict(random_state_dict(cfg), assign=True)
    model = model.to(device).eval().requires_grad_(False)
    build_s = time.perf_counter() - started
    rss_model = peak_rss_gib()

    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=gen) * 2 - 1 for _ in range(args.views)]
    text = torch.nn.functional.normalize(torch.randn(100, 768, generator=gen), dim=-1)
    meter = StageMeter(model, device)
    kwargs = {"num_keyframes": args.keyframes, "amp": args.dtype == "bf16"}
    if args.max_batch is not None:
        kwargs["max_batch"] = args.max_batch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    meter.counting = True
    run_inference(model, images, text, **kwargs)  # warm-up; counts FLOPs
    meter.counting = False
    best_total, best_stages = float("inf"), {}
    for _ in range(max(1, args.repeats)):
        meter.reset()
        _sync(device)
        started = time.perf_counter()
        run_inference(model, images, text, **kwargs)
        _sync(device)
        total = time.perf_counter() - started
        if total < best_total:
            best_total, best_stages = total, dict(meter.seconds)

    print(
        f"PanSt3R {args.version}, {args.views} views of {width}x{height}, keyframes {args.keyframes or 'all'}, "
        f"{args.dtype}, device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"fp32 4096^2 matmul: {rate:.1f} GFLOP/s" + (f"; bf16: {rate_bf16:.1f} GFLOP/s" if rate_bf16 else ""))
    print(f"{'stage':<20}{'seconds':>9}{'GFLOP':>10}{'GFLOP/s':>10}{'of matmul':>11}")
    rows = [(s, best_stages.get(s, 0.0), meter.flops.get(s, 0)) for s in STAGES]
    rest = best_total - sum(r[1] for r in rows)
    total_flops = sum(meter.flops.values())
    rows += [("other", rest, 0), ("total", best_total, total_flops)]
    for stage, seconds, flops in rows:
        achieved = flops / seconds / 1e9 if seconds > 0 and flops else 0.0
        frac = f"{achieved / rate:>10.0%}" if flops else f"{'':>10}"
        print(f"{stage:<20}{seconds:>9.2f}{flops / 1e9:>10.1f}{achieved:>10.1f} {frac}")
    print(f"{'build weights':<20}{build_s:>9.2f}")
    print(f"views / s: {args.views / best_total:.3f}")
    print(f"peak RSS GiB: {peak_rss_gib():.2f} (weights alone: {rss_model:.2f})")
    if device.type == "cuda":
        print(f"peak CUDA GiB: {torch.cuda.max_memory_allocated() / 2**30:.2f}")


if __name__ == "__main__":
    main()
