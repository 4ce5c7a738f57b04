"""Gaussian-splat fit benchmark on a synthetic scene with known cameras and held-out novel views.

    .venv/bin/python benchmarks/bench_splats.py [--scene blender|numpy --steps 300 --gaussians 10000
                                                 --views N --holdout-every 4 --width W --height H
                                                 --stride 2 --samples 8 --scene-seed 0 --threads 0 --seed 0]

``--scene blender`` (the default when ``bpy`` imports): a seeded room with furniture rendered by Cycles
(:mod:`panst3r_engine.eval.synthetic`, default 12 views at 160x120, cameras on an orbit looking at the room's
centre). Every ``--holdout-every``-th view is held out (with 12 and 4: views 2, 6, 10, each between two
training views); the others become a ground-truth bundle (:mod:`panst3r_engine.splats.from_scene`): every
``--stride``-th pixel's depth back-projected to a point, coloured from the photo, labelled with its instance
(segment) and class, the exact K and pose per camera, the photos.

``--scene numpy`` (tests/splats/scene.py): a checkered floor, two boxes and two spheres ray-cast into
``--views`` training cameras on a circle (default 8 at 128x96) and ``--test-views`` held-out cameras between
them, closer and higher.

Reported per device: Gaussians (initial -> final), time per step and total fit time (initialisation, PSNR
evaluation and fit), PSNR on the held-out views and on the training views, instance and class pixel accuracy
on the held-out views, each before (the initial Gaussians) -> after the fit, and the time to render one novel
view with labels; for the Blender scene also the majority-label baseline. The GPU row appears only when CUDA
and gsplat's compiled kernels are available.
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

from panst3r_engine.splats import fit_bundle, gsplat_cuda_available, render  # noqa: E402
from panst3r_engine.splats.fit import make_view, mean_psnr  # noqa: E402
from panst3r_engine.splats.labels import pixel_accuracy  # noqa: E402

DEFAULTS = {"numpy": {"views": 8, "width": 128, "height": 96}, "blender": {"views": 12, "width": 160, "height": 120}}


def bpy_available() -> bool:
    try:
        import bpy  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 - missing, or installed for another Python / without its libraries
        return False
    return True


def fit(device: str, bundle: Path, args: argparse.Namespace):
    """(FitResult, seconds per step, total seconds) of one fit of the bundle on ``device``."""
    stamps: list[float] = []
    start = time.perf_counter()
    result = fit_bundle(
        bundle,
        steps=args.steps,
        device=device,
        max_gaussians=args.gaussians,
        seed=args.seed,
        progress=lambda stage, fraction, message: stamps.append(time.perf_counter()),
    )
    total = time.perf_counter() - start
    return result, (stamps[-1] - stamps[0]) / max(args.steps, 1), total


def row(device: str, result, step_s: float, total: float, before, after) -> dict:
    return {
        "device": device,
        "n0": len(result.initial),
        "n": len(result.model),
        "steps": result.stats["steps"],
        "step_s": step_s,
        "total_s": total,
        "psnr0": before["psnr"],
        "psnr1": after["psnr"],
        "train0": result.stats["psnr_before"],
        "train1": result.stats["psnr_after"],
        "acc0": before["inst"],
        "acc1": after["inst"],
        "cls0": before["cls"],
        "cls1": after["cls"],
        "render_s": after["render_s"],
    }


# ---------------------------------------------------------------- the numpy ray-cast scene
def run_numpy(args: argparse.Namespace, tmp: Path, devices: list[str]) -> list[dict]:
    from tests.splats.scene import class_map, make_scene, to_uint8  # noqa: PLC0415

    start = time.perf_counter()
    bundle, cams, shots = make_scene(tmp / "job", args.width, args.height, args.views, args.test_views)
    points = len(np.load(bundle / "points.npz")["xyz"])
    print(
        f"numpy scene: {args.views} training + {len(cams)} held-out views at {args.width}x{args.height}, "
        f"{points} points, built in {time.perf_counter() - start:.2f} s"
    )

    def scores(model, device: str) -> dict:
        model = model.to(device)
        views = [
            make_view(f"test{i}", to_uint8(s.rgb), c.K, c.cam_to_world, device)
            for i, (c, s) in enumerate(zip(cams, shots))
        ]
        seg, cls, times = [], [], []
        for cam, shot in zip(cams, shots):
            t = time.perf_counter()
            out = render(model, cam.K, cam.cam_to_world, cam.width, cam.height)
            times.append(time.perf_counter() - t)
            seg.append(pixel_accuracy(out.segment, shot.segment))
            cls.append(pixel_accuracy(out.class_id, class_map(shot.segment)))
        return {
            "psnr": mean_psnr(model, views),
            "inst": float(np.mean(seg)),
            "cls": float(np.mean(cls)),
            "render_s": float(np.median(times)),
        }

    rows = []
    for device in devices:
        result, step_s, total = fit(device, bundle, args)
        rows.append(row(device, result, step_s, total, scores(result.initial, device), scores(result.model, device)))
    return rows


# ---------------------------------------------------------------- the Blender room
def run_blender(args: argparse.Namespace, tmp: Path, devices: list[str]) -> list[dict]:
    from panst3r_engine.eval.dataset import read_scene  # noqa: PLC0415
    from panst3r_engine.eval.ground_truth import bundle_from_scene, evaluate_views, holdout_split, majority_baseline  # noqa: PLC0415
    from panst3r_engine.eval.synthetic import generate_scene  # noqa: PLC0415

    start = time.perf_counter()
    generate_scene(
        tmp / "scene",
        seed=args.scene_seed,
        num_views=args.views,
        width=args.width,
        height=args.height,
        samples=args.samples,
    )
    rendered = time.perf_counter() - start
    scene = read_scene(tmp / "scene")
    train, held = holdout_split(len(scene.views), args.holdout_every)
    bundle = bundle_from_scene(scene, train, tmp / "bundle", stride=args.stride)
    points = len(np.load(bundle / "points.npz")["xyz"])
    held_views = [scene.views[i] for i in held]
    inst_base, cls_base = majority_baseline(held_views)
    print(
        f"Blender scene (seed {args.scene_seed}, {args.samples} Cycles samples, rendered in {rendered:.1f} s): "
        f"{len(train)} training + {len(held)} held-out views (views {held}) at {args.width}x{args.height}; "
        f"ground-truth bundle of {points} points (stride {args.stride}), "
        f"{len(scene.instances)} instances of {len({i.class_id for i in scene.instances})} classes"
    )
    print(f"majority-label baseline on the held-out views: instance {inst_base:.3f}, class {cls_base:.3f}")

    def scores(model, device: str) -> dict:
        s = evaluate_views(model.to(device), held_views)
        return {"psnr": s.psnr, "inst": s.instance_acc, "cls": s.class_acc, "render_s": s.render_s}

    rows = []
    for device in devices:
        result, step_s, total = fit(device, bundle, args)
        rows.append(row(device, result, step_s, total, scores(result.initial, device), scores(result.model, device)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scene",
        choices=["blender", "numpy"],
        default=None,
        help="blender (default when bpy imports) or numpy (the procedural ray-cast scene)",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--gaussians", type=int, default=10_000, help="max_gaussians (initial voxel merge and cap)")
    parser.add_argument("--width", type=int, default=None, help="default 160 (blender), 128 (numpy)")
    parser.add_argument("--height", type=int, default=None, help="default 120 (blender), 96 (numpy)")
    parser.add_argument(
        "--views",
        type=int,
        default=None,
        help="blender: views rendered, held-out ones included (default 12); numpy: training views (default 8)",
    )
    parser.add_argument("--holdout-every", type=int, default=4, help="blender: hold out every k-th view")
    parser.add_argument("--stride", type=int, default=2, help="blender: a point from every k-th pixel in x and y")
    parser.add_argument("--samples", type=int, default=8, help="blender: Cycles samples per pixel (denoised)")
    parser.add_argument("--scene-seed", type=int, default=0, help="blender: the room's seed")
    parser.add_argument("--test-views", type=int, default=4, help="numpy: held-out novel views")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed")
    args = parser.parse_args()
    if args.scene is None:
        args.scene = "blender" if bpy_available() else "numpy"
    for key, value in DEFAULTS[args.scene].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and gsplat_cuda_available() else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.steps} steps, "
        f"at most {args.gaussians} Gaussians, fit seed {args.seed}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-splats-") as tmp:
        rows = (run_blender if args.scene == "blender" else run_numpy)(args, Path(tmp), devices)
    print()
    print(
        "| device | Gaussians | steps | s/step | fit total s | held-out PSNR dB | train PSNR dB "
        "| instance acc | class acc | render s/view |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "CPU (torch rasteriser)" if r["device"] == "cpu" else f"GPU (gsplat, {torch.cuda.get_device_name()})"
        print(
            f"| {name} | {r['n0']} -> {r['n']} | {r['steps']} | {r['step_s']:.3f} | {r['total_s']:.1f} "
            f"| {r['psnr0']:.2f} -> {r['psnr1']:.2f} | {r['train0']:.2f} -> {r['train1']:.2f} "
            f"| {r['acc0']:.3f} -> {r['acc1']:.3f} | {r['cls0']:.3f} -> {r['cls1']:.3f} | {r['render_s']:.3f} |"
        )
    print(
        "\n(before -> after: the initial Gaussians from the points -> the fitted ones; accuracies on the held-out "
        "views)"
    )
    if len(rows) == 1:
        print("(no GPU row: CUDA or gsplat's compiled kernels are not available here)")


if __name__ == "__main__":
    main()
