"""Reading photos into the network's input format.

The network takes RGB in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``, DUSt3R's
``ImgNorm``) with both sides multiples of 16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """A photo that cannot be used, naming the file and the reason."""


@dataclass(frozen=True)
class LoadedImage:
    path: Path
    tensor: torch.Tensor  # [3, H, W] float32 in [-1, 1]
    original_size: tuple[int, int]  # (W, H) of the file, after EXIF orientation


def to_network(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return (torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode a photo to uint8 RGB [H, W, 3]; raises :class:`ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def load_unresized(paths: list[str | os.PathLike], patch_size: int = 16) -> list[LoadedImage]:
    """Load photos as they are (``--resize none``): sides must be multiples of ``patch_size``."""
    out = []
    for path in paths:
        rgb = read_rgb(path)
        height, width = rgb.shape[:2]
        if height % patch_size or width % patch_size:
            raise ImageError(f"{path}: {width}x{height} pixels; with --resize none both sides must be multiples of "
                             f"{patch_size} (use --resize 512 to resize and crop like the official loader)")
        out.append(LoadedImage(Path(path), to_network(rgb), (width, height)))
    return out
