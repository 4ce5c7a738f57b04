"""Reading photos into the network's input format.

The network takes RGB in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``, DUSt3R's
``ImgNorm``) with both sides multiples of 16. ``--resize 512`` reproduces the
official loader (the public PanSt3R/DUSt3R image loader, naver/panst3r): normalise first, then centre-crop
to the nearest allowed aspect ratio and resize (bilinear, antialiased) to one of
512x384, 512x336, 512x288, 512x256, 512x160 (transposed for portrait photos).

Portrait photos are handed to the network transposed (landscape), the layout
it was trained on; :func:`to_photo_orientation` turns outputs back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from panst3r_engine.errors import PanSt3RError

# (W, H) for landscape photos at 512, keyed by aspect ratio W / H.
RESOLUTIONS_512 = {4 / 3: (512, 384), 32 / 21: (512, 336), 16 / 9: (512, 288), 2 / 1: (512, 256), 16 / 5: (512, 160)}
MIN_SIDE = {"512": 64, "none": 32}  # smaller photos carry too little detail to reconstruct

Image.MAX_IMAGE_PIXELS = 400_000_000  # allow large photos, still refuse decompression bombs


class ImageError(PanSt3RError):
    """A photo that cannot be used, naming the file and the reason."""

    code = "bad_image"


@dataclass(frozen=True)
class Photo:
    """One input photo, processed.

    ``rgb`` is the processed photo in its own orientation (what the bundle keeps);
    ``tensor`` is the network input, transposed to landscape when ``transposed``.
    ``crop_box`` (x0, y0, x1, y1) is the region of the EXIF-oriented original
    that was resized to ``processed_size``.
    """

    path: Path
    rgb: np.ndarray  # [H, W, 3] uint8
    tensor: torch.Tensor  # [3, h, w] float32 in [-1, 1], h <= w
    original_size: tuple[int, int]  # (W, H)
    crop_box: tuple[int, int, int, int]
    transposed: bool

    @property
    def processed_size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def to_network(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return (torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float32 [3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return ((tensor.clamp(-1, 1) * 0.5 + 0.5) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB (16-bit and float greyscale are rescaled, not clipped)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode a photo to uint8 RGB [H, W, 3] with EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    _register_heif()
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(_to_rgb(ImageOps.exif_transpose(im)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def target_size_512(width: int, height: int) -> tuple[int, int]:
    """(W, H) the official loader picks for a photo: nearest allowed aspect ratio."""
    ratio = width / height
    keys = np.array(list(RESOLUTIONS_512))
    landscape = width >= height
    key = keys[np.argmin(np.abs(ratio - (keys if landscape else 1 / keys)))]
    w, h = RESOLUTIONS_512[float(key)]
    return (w, h) if landscape else (h, w)


def crop_box_for(width: int, height: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """Centre crop of the original to the target's aspect ratio (torchvision CenterCrop rounding)."""
    ratio, target_ratio = width / height, target[0] / target[1]
    crop_w, crop_h = width, height
    if abs(ratio - target_ratio) >= np.finfo(np.float32).eps:
        if ratio < target_ratio:
            crop_h = int(width / target_ratio)
        else:
            crop_w = int(height * target_ratio)
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


def resize_512(tensor: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Official 512 resize of a normalised [3, H, W] tensor; returns it and the crop box."""
    height, width = tensor.shape[-2:]
    if sorted((width, height), reverse=True) in [list(v) for v in RESOLUTIONS_512.values()]:
        return tensor, (0, 0, width, height)
    target = target_size_512(width, height)
    x0, y0, x1, y1 = crop_box_for(width, height, target)
    cropped = tensor[:, y0:y1, x0:x1]
    resized = F.interpolate(cropped[None], size=(target[1], target[0]), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    return resized, (x0, y0, x1, y1)


def load_photo(path: str | os.PathLike, resize: str = "512", patch_size: int = 16) -> Photo:
    """Read, orient, crop/resize (``resize`` '512' or 'none') and lay out one photo."""
    rgb = read_rgb(path)
    height, width = rgb.shape[:2]
    least = MIN_SIDE.get(resize, 32)
    if min(width, height) < least:
        raise ImageError(f"{path}: {width}x{height} pixels is too small (the short side needs at least {least} px)")
    tensor = to_network(rgb)
    if resize == "512":
        tensor, box = resize_512(tensor)
    elif resize == "none":
        if height % patch_size or width % patch_size:
            raise ImageError(f"{path}: {width}x{height} pixels; with --resize none both sides must be multiples of "
                             f"{patch_size} (use --resize 512 to resize and crop like the official loader)")
        box = (0, 0, width, height)
    else:
        raise ValueError(f"unknown resize mode {resize!r} (expected '512' or 'none')")
    processed = to_uint8(tensor) if resize == "512" else rgb
    transposed = tensor.shape[1] > tensor.shape[2]
    network = tensor.transpose(1, 2).contiguous() if transposed else tensor
    return Photo(Path(path), processed, network, (width, height), box, transposed)


def load_photos(paths: list[str | os.PathLike], resize: str = "512") -> list[Photo]:
    """Load every photo, or raise one :class:`ImageError` listing every bad file."""
    photos, problems = [], []
    for path in paths:
        try:
            photos.append(load_photo(path, resize))
        except ImageError as exc:
            problems.append(str(exc))
    if problems:
        raise ImageError("; ".join(problems) if len(problems) < 4 else
                         f"{len(problems)} photos cannot be used: " + "; ".join(problems[:3]) + "; ...")
    return photos


def to_photo_orientation(array: torch.Tensor | np.ndarray, transposed: bool, spatial: tuple[int, int]):
    """Swap the two spatial axes back for a photo that ran transposed."""
    if not transposed:
        return array
    a, b = spatial
    return array.swapaxes(a, b) if isinstance(array, np.ndarray) else array.transpose(a, b)


def load_unresized(paths: list[str | os.PathLike], patch_size: int = 16) -> list[Photo]:
    """``--resize none``: photos as they are (sides must be multiples of ``patch_size``)."""
    return load_photos(paths, resize="none")
