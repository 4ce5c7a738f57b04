"""Fixtures for training tests: tiny checkpoints and small painted scenes (no Blender needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from panst3r_engine.eval.dataset import ClassInfo, InstanceInfo, SceneDataset, View, write_scene
from panst3r_engine.model.checkpoints import write_random_checkpoint

SCENES, VIEWS, WIDTH, HEIGHT = 6, 4, 64, 48
CLASSES = [ClassInfo(1, "wall", False), ClassInfo(2, "floor", False), ClassInfo(3, "mug", True)]
COLOURS = {1: (200, 190, 170), 2: (90, 60, 40), 3: (30, 80, 200)}


def painted_scene(seed: int, views: int = 4, width: int = 64, height: int = 48) -> SceneDataset:
    """A wall above a floor with two mugs that move a little between views; photos painted from the labels."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(views):
        sem = np.ones((height, width), np.uint16)
        horizon = height // 2 + int(rng.integers(-4, 5))
        sem[horizon:] = 2
        inst = np.where(sem == 1, 1, 2).astype(np.uint16)
        for k, x0 in enumerate((8 + 2 * v, 36 - v)):
            y0 = horizon - 6
            sem[y0 : y0 + 12, x0 : x0 + 10] = 3
            inst[y0 : y0 + 12, x0 : x0 + 10] = 3 + k
        image = np.zeros((height, width, 3), np.uint8)
        for cid, colour in COLOURS.items():
            image[sem == cid] = colour
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        out.append(View(f"view_{v:03d}", np.eye(3), np.eye(4), image, None, sem, inst))
    instances = [
        InstanceInfo(1, 1, "wall"),
        InstanceInfo(2, 2, "floor"),
        InstanceInfo(3, 3, "mug"),
        InstanceInfo(4, 3, "mug"),
    ]
    return SceneDataset(CLASSES, instances, out, seed=seed)


@pytest.fixture(scope="session")
def tiny_v2(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_v2.pth", "v2", "tiny", seed=5)


@pytest.fixture(scope="session")
def painted_scenes(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("painted")
    return [write_scene(painted_scene(seed), root / f"scene_{seed}") for seed in (0, 1)]


@pytest.fixture(scope="session")
def rendered_rooms(tmp_path_factory) -> list[Path]:
    """Six seeded 4-view 64x48 rooms (about 5 s each), rendered once per session."""
    try:
        import bpy  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy does not import: {exc}")
    from panst3r_engine.eval.synthetic import generate_scene

    root = tmp_path_factory.mktemp("rooms")
    return [
        generate_scene(root / f"room_{i}", seed=100 + i, num_views=VIEWS, width=WIDTH, height=HEIGHT, fast=True)
        for i in range(SCENES)
    ]
