"""Synthetic benchmark scenes rendered with Blender: photos with exact cameras, depth and panoptic labels.

A seeded room (floor, walls, ceiling, door, window and 3-6 furniture pieces
built from boxes and cylinders, textured procedurally so reconstruction has
features) is laid out by :mod:`scene_layout`, built and rendered by
:mod:`blender_render` (Cycles, CPU), and written as a ``panst3r-synthetic-1``
folder (see :mod:`dataset`). Needs ``bpy`` (``pip install bpy==5.0.1``,
Python 3.11); this module imports without it.

CLI: ``python -m panst3r_engine.eval.synthetic OUT --seed S --views N --width W --height H``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from panst3r_engine.eval.camera_conventions import blender_intrinsics, blender_to_opencv
from panst3r_engine.eval.dataset import ClassInfo, InstanceInfo, SceneDataset, View, write_scene
from panst3r_engine.eval.scene_layout import SYNTHETIC_CLASSES, CameraPath, RoomLayout, sample_layout


def _render_all(
    layout: RoomLayout, samples: int, fast: bool, work: Path, save_blend: Path | None
) -> tuple[list, list, list, dict]:
    """Build and render the layout; returns photo paths, data-pass paths, camera data and timings."""
    from panst3r_engine.eval import blender_render as br  # noqa: PLC0415

    t0 = time.perf_counter()
    scene, cams = br.build_scene(layout)
    t1 = time.perf_counter()
    photos = br.render_photos(
        scene,
        cams,
        work,
        samples=1 if fast else samples,
        denoise=not fast,
        bounces=1 if fast else 3,
        seed=int(layout.meta["seed"]),
    )
    t2 = time.perf_counter()
    data = br.render_data(scene, cams, work)
    t3 = time.perf_counter()
    if save_blend is not None:
        br.require_bpy().ops.wm.save_as_mainfile(filepath=str(save_blend))
    timings = {"build_s": t1 - t0, "photos_s": t2 - t1, "passes_s": t3 - t2}
    return photos, data, br.camera_matrices(cams), timings


def _view_from_render(
    stem: str,
    photo: Path,
    data: Path,
    matrix_world: np.ndarray,
    cam: dict,
    width: int,
    height: int,
    class_of: dict[int, int],
) -> View:
    """One dataset view: Blender camera -> OpenCV pose and K, passes -> depth and label maps."""
    from panst3r_engine.eval.blender_render import read_data_passes  # noqa: PLC0415

    if cam["sensor_fit"] != "HORIZONTAL":
        raise RuntimeError(f"camera {stem}: expected a horizontal sensor fit, got {cam['sensor_fit']}")
    passes = read_data_passes(data)
    lut = np.zeros(max(class_of, default=0) + 1, np.int64)
    for inst, cls in class_of.items():
        lut[inst] = cls
    semantic = lut[passes["instance"]]
    bad = np.count_nonzero(semantic != passes["semantic"])
    if bad:
        raise RuntimeError(f"view {stem}: material-index pass disagrees with the instance classes on {bad} pixels")
    image = np.asarray(Image.open(photo).convert("RGB"))
    if image.shape[:2] != (height, width):
        raise RuntimeError(f"view {stem}: rendered {image.shape[1]}x{image.shape[0]}, expected {width}x{height}")
    K = blender_intrinsics(cam["lens"], cam["sensor_width"], width, height, cam["shift_x"], cam["shift_y"])
    return View(
        stem,
        K,
        blender_to_opencv(matrix_world),
        image,
        passes["depth"],
        semantic.astype(np.uint16),
        passes["instance"].astype(np.uint16),
    )


def layout_to_dataset(layout: RoomLayout, views: list[View], meta: dict) -> SceneDataset:
    """Class list, instance list and views of a rendered layout."""
    classes = [ClassInfo(i + 1, name, isthing) for i, (name, isthing) in enumerate(SYNTHETIC_CLASSES)]
    instances = [InstanceInfo(o.instance_id, o.class_id, f"{o.class_name}_{o.instance_id}") for o in layout.objects]
    return SceneDataset(classes, instances, views, seed=int(layout.meta["seed"]), meta=meta)


def generate_scene(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_views: int = 6,
    width: int = 128,
    height: int = 96,
    samples: int = 8,
    path: CameraPath = "orbit",
    fast: bool = False,
    save_blend: bool = False,
) -> Path:
    """Render a seeded synthetic room and write it as a scene folder at ``out_dir``.

    ``path``: 'orbit' (cameras on an ellipse round the room centre) or 'walk'
    (a line along one wall), all looking at the centre. ``samples``: Cycles
    samples for the photos (denoised). ``fast``: 1 sample, no denoising, one
    bounce (noisy photos, same ground truth) for tests. ``save_blend`` also
    writes ``scene.blend`` for inspection. Returns the folder path.
    """
    t0 = time.perf_counter()
    layout = sample_layout(seed, num_views, width, height, path)
    class_of = {o.instance_id: o.class_id for o in layout.objects}
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="panst3r-synth-") as tmp:
        blend = Path(tmp) / "scene.blend" if save_blend else None
        photos, data, cams, timings = _render_all(layout, samples, fast, Path(tmp), blend)
        views = [
            _view_from_render(f"view_{i:03d}", photos[i], data[i], m, c, width, height, class_of)
            for i, (m, c) in enumerate(cams)
        ]
        meta = {
            "generator": "panst3r_engine.eval.synthetic",
            "path": path,
            "samples": 1 if fast else samples,
            "fast": fast,
            "room_size": list(layout.size),
            "lens_mm": layout.lens_mm,
            "look_at": layout.meta["target"],
            "world": "Blender (metres, Z up)",
            "timings": {**timings, "total_s": time.perf_counter() - t0},
        }
        scene = layout_to_dataset(layout, views, meta)
        write_scene(scene, out)
        if blend is not None:
            blend.replace(out / "scene.blend")
    return out


def add_scene_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The generator's options, shared by this module's CLI and ``python -m panst3r_engine eval make-scene``."""
    p.add_argument("out", help="output scene folder (replaced if it already holds a scene)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--samples", type=int, default=8, help="Cycles samples for the photos")
    p.add_argument("--path", choices=["orbit", "walk"], default="orbit", help="camera path")
    p.add_argument("--fast", action="store_true", help="1 sample, no denoising (for tests)")
    p.add_argument("--save-blend", action="store_true", help="also write scene.blend")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(a: argparse.Namespace) -> int:
    """Render one scene from parsed options; one line on stderr and exit code 2 on failure."""
    from panst3r_engine.eval.blender_render import BlenderUnavailable  # noqa: PLC0415
    from panst3r_engine.eval.dataset import DatasetError  # noqa: PLC0415

    t = time.perf_counter()
    try:
        out = generate_scene(a.out, a.seed, a.views, a.width, a.height, a.samples, a.path, a.fast, a.save_blend)
    except (BlenderUnavailable, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({a.views} views, {a.width}x{a.height}) in {time.perf_counter() - t:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI: render one synthetic scene folder and print where it went."""
    p = argparse.ArgumentParser(
        prog="python -m panst3r_engine.eval.synthetic",
        description="Render a seeded synthetic room: photos, cameras, depth, panoptic labels.",
    )
    return run_from_args(add_scene_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
