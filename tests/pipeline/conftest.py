"""Fixtures for pipeline tests: a tiny random checkpoint and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.model.checkpoints import write_random_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_v2.pth", "v2", "tiny", seed=5)


def textured(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like image: smooth gradients plus blocks, so every view differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), rng.integers(0, 255) * np.ones_like(xx)],
        axis=-1,
    ).astype(np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        img[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.integers(0, 255, 3)
    return img


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """Three photos of mixed sizes and orientations."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(textured(320, 240, 0)).save(folder / "a_landscape.jpg", quality=92)
    Image.fromarray(textured(240, 320, 1)).save(folder / "b_portrait.png")
    Image.fromarray(textured(300, 300, 2)).save(folder / "c_square.webp")
    return folder
