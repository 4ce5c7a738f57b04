"""Gaussian-splat fit benchmark on a procedural scene with known cameras and held-out novel views.

    .venv/bin/python benchmarks/bench_splats.py [--steps 300 --gaussians 10000 --width 128 --height 96
                                                 --views 8 --test-views 4 --threads 0 --seed 0]

The scene (tests/splats/scene.py) is a checkered floor, two boxes and two spheres ray-cast into ``--views``
training cameras on a circle; the bundle holds their photos and every hit pixel as a labelled point. The
held-out cameras sit between the training ones, closer and higher. Reported per device: Gaussians (initial
-> final), time per step and total fit time (initialisation, PSNR evaluation and fit), PSNR and instance
pixel accuracy on the held-out views before and after the fit, and the time to render one novel view with
labels. The GPU row appears only when CUDA and gsplat's compiled kernels are available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.splats import fit_bundle, gsplat_cuda_available, render
from panst3r_engine.splats.fit import make_view, mean_psnr
from panst3r_engine.splats.labels import pixel_accuracy
from tests.splats.scene import class_map, make_scene, to_uint8


def label_accuracy(model, cams, shots, device: str) -> tuple[float, float, float]:
    """(instance accuracy, class accuracy, seconds per novel-view render) over the held-out views."""
    model = model.to(device)
    seg, cls, times = [], [], []
    for cam, shot in zip(cams, shots):
        start = time.perf_counter()
        out = render(model, cam.K, cam.cam_to_world, cam.width, cam.height)
        times.append(time.perf_counter() - start)
        seg.append(pixel_accuracy(out.segment, shot.segment))
        cls.append(pixel_accuracy(out.class_id, class_map(shot.segment)))
    return float(np.mean(seg)), float(np.mean(cls)), float(np.median(times))


def run(device: str, bundle: Path, cams, shots, args: argparse.Namespace) -> dict:
    stamps: list[float] = []
    start = time.perf_counter()
    result = fit_bundle(bundle, steps=args.steps, device=device, max_gaussians=args.gaussians, seed=args.seed,
                        progress=lambda stage, fraction, message: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    views = [make_view(f"test{i}", to_uint8(s.rgb), c.K, c.cam_to_world, device) for i, (c, s) in
             enumerate(zip(cams, shots))]
    before_acc, before_cls, _ = label_accuracy(result.initial, cams, shots, device)
    after_acc, after_cls, render_s = label_accuracy(result.model, cams, shots, device)
    return {"device": device, "n0": len(result.initial), "n": len(result.model), "steps": args.steps,
            "step_s": (stamps[-1] - stamps[0]) / max(args.steps, 1), "total_s": total,
            "psnr0": mean_psnr(result.initial.to(device), views), "psnr1": mean_psnr(result.model.to(device), views),
            "train0": result.stats["psnr_before"], "train1": result.stats["psnr_after"],
            "acc0": before_acc, "acc1": after_acc, "cls0": before_cls, "cls1": after_cls, "render_s": render_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--gaussians", type=int, default=10_000, help="max_gaussians (initial voxel merge and cap)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--views", type=int, default=8, help="training views in the bundle")
    parser.add_argument("--test-views", type=int, default=4, help="held-out novel views")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bundle, cams, shots = make_scene(Path(tmp) / "job", args.width, args.height, args.views, args.test_views)
        points = len(np.load(bundle / "points.npz")["xyz"])
        print(f"scene: {args.views} training + {len(cams)} held-out views at {args.width}x{args.height}, "
              f"{points} points, built in {time.perf_counter() - start:.2f} s; torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and gsplat_cuda_available() else [])
        rows = [run(device, bundle, cams, shots, args) for device in devices]
    print()
    print("| device | Gaussians | steps | s/step | fit total s | held-out PSNR dB | train PSNR dB "
          "| instance acc | class acc | render s/view |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "CPU (torch rasteriser)" if r["device"] == "cpu" else f"GPU (gsplat, {torch.cuda.get_device_name()})"
        print(f"| {name} | {r['n0']} -> {r['n']} | {r['steps']} | {r['step_s']:.3f} | {r['total_s']:.1f} "
              f"| {r['psnr0']:.2f} -> {r['psnr1']:.2f} | {r['train0']:.2f} -> {r['train1']:.2f} "
              f"| {r['acc0']:.3f} -> {r['acc1']:.3f} | {r['cls0']:.3f} -> {r['cls1']:.3f} | {r['render_s']:.3f} |")
    if len(rows) == 1:
        print("\n(no GPU row: CUDA or gsplat's compiled kernels are not available here)")


if __name__ == "__main__":
    main()
