"""Full-size network forward on CPU (or GPU): time per stage and peak memory.

Usage: python benchmarks/bench_network.py [--version v1|v2] [--views 3] [--size 224x160] [--device cpu]

Weights are the parity fill rule (random but deterministic), so the numbers are
those of the real architecture; no checkpoint file is needed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.devices import resolve_device  # noqa: E402
from panst3r_engine.model.checkpoints import random_state_dict  # noqa: E402
from panst3r_engine.model.configs import model_config  # noqa: E402
from panst3r_engine.model.inference import run_inference  # noqa: E402
from panst3r_engine.model.panst3r import PanSt3R  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=["v1", "v2"], default="v2")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--keyframes", type=int, default=None)
    parser.add_argument("--size", default="224x160", help="W x H of every view (multiples of 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=1)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)

    started = time.perf_counter()
    cfg = model_config(args.version)
    with torch.device("meta"):
        model = PanSt3R(cfg)
    model.load_state_dict(random_state_dict(cfg), assign=True)
    model = model.to(device).eval()
    build_s = time.perf_counter() - started
    rss_model = peak_rss_gib()

    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=gen) * 2 - 1 for _ in range(args.views)]
    text = torch.nn.functional.normalize(torch.randn(100, 768, generator=gen), dim=-1)
    marks: list[tuple[str, float]] = []
    last = {"t": time.perf_counter()}

    def progress(stage: str, fraction: float) -> None:
        if fraction >= 1.0:
            now = time.perf_counter()
            marks.append((stage, now - last["t"]))
            last["t"] = now

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    last["t"] = started
    run_inference(model, images, text, num_keyframes=args.keyframes, max_batch=args.max_batch, progress=progress)
    total = time.perf_counter() - started

    print(
        f"PanSt3R {args.version}, {args.views} views of {width}x{height}, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'stage':<20}{'seconds':>10}")
    print(f"{'build weights':<20}{build_s:>10.2f}")
    for stage, seconds in marks:
        print(f"{stage:<20}{seconds:>10.2f}")
    print(f"{'forward total':<20}{total:>10.2f}")
    print(f"{'views / s':<20}{args.views / total:>10.2f}")
    print(f"{'peak RSS GiB':<20}{peak_rss_gib():>10.2f}   (weights alone: {rss_model:.2f})")
    if device.type == "cuda":
        print(f"{'peak CUDA GiB':<20}{torch.cuda.max_memory_allocated() / 2**30:>10.2f}")


if __name__ == "__main__":
    main()
