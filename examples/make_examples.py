"""Render the example photos in ``examples/room/`` (the README's main job runs on them).

    .venv/bin/python examples/make_examples.py [--samples 32] [--out examples/room]

A seeded synthetic room (seed 7, 6 views, 512x384) rendered with Blender
(needs ``pip install bpy==5.0.1``). The folder gets the photos as
``view_<i>.jpg`` (JPEG quality 90) and, when they add under 1 MB, the ground
truth beside them as a ``panst3r-synthetic-1`` scene: ``scene.json`` (cameras,
classes, instances; its views point at the JPEGs) plus ``semantic/`` and
``instance/``. Depth is left out (float32 maps are ~0.8 MB a view); rerun
``python -m panst3r_engine.eval.synthetic`` with the same seed for it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panst3r_engine.eval.dataset import read_scene, write_scene  # noqa: E402
from panst3r_engine.eval.synthetic import generate_scene  # noqa: E402

SEED, VIEWS, WIDTH, HEIGHT = 7, 6, 512, 384
MAX_BYTES = 1_000_000


def folder_bytes(path: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def make_room(out: Path, samples: int) -> dict:
    """Render, then write photos (+ small ground truth) to ``out``; returns sizes and timings."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scene = read_scene(
            generate_scene(Path(tmp) / "scene", seed=SEED, num_views=VIEWS, width=WIDTH, height=HEIGHT, samples=samples)
        )
    render_s = time.perf_counter() - t0
    for i, v in enumerate(scene.views):
        v.stem, v.image_file, v.depth = f"view_{i}", f"view_{i}.jpg", None
    scene.meta["example"] = "depth omitted; regenerate the full scene with the generator and the same seed"
    if out.exists() and not (out / "scene.json").is_file():
        shutil.rmtree(out)  # an earlier photos-only run
    write_scene(scene, out)
    photos, total = folder_bytes(out, "view_*.jpg"), folder_bytes(out)
    if total - photos > MAX_BYTES:  # ground truth too large for the repository: keep the photos only
        for p in out.iterdir():
            if not p.name.endswith(".jpg"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return {"render_s": render_s, "photos_bytes": photos, "total_bytes": folder_bytes(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32, help="Cycles samples per photo (denoised)")
    p.add_argument("--out", type=Path, default=ROOT / "examples" / "room")
    a = p.parse_args(argv)
    info = make_room(a.out, a.samples)
    print(
        f"{a.out}: {VIEWS} views {WIDTH}x{HEIGHT}, rendered in {info['render_s']:.1f} s; "
        f"photos {info['photos_bytes'] / 1e3:.0f} kB, folder {info['total_bytes'] / 1e3:.0f} kB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
