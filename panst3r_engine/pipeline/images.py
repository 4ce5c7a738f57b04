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
import re
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from panst3r_engine.errors import PanSt3RError

# (W, H) for landscape photos at 512, keyed by aspect ratio W / H.
RESOLUTIONS_512 = {4 / 3: (512, 384), 32 / 21: (512, 336), 16 / 9: (512, 288), 2 / 1: (512, 256), 16 / 5: (512, 160)}
MIN_SIDE = {"512": 64, "none": 32}  # smaller photos carry too little detail to reconstruct

# Photos larger than this are refused from their header, before any pixel is decoded: a 762 kB PNG can
# claim 28000^2 pixels, and 20000^2 took 10.5 GB and 44 s to decode. The service can change it
# (set_max_pixels); Pillow's own bomb check is kept at the same number.
MAX_PIXELS = 100_000_000
# Large photos are decoded at a reduced scale (JPEG draft: 1/2, 1/4, 1/8 in the DCT; other formats: reduce())
# when the 512 loader will shrink them anyway: above REDUCE_FROM pixels, to a long side of REDUCED_LONG_SIDE px
# or more. Photos up to REDUCE_FROM (12 MP phones) decode in full, exactly like the official loader.
REDUCE_FROM = 16_000_000
REDUCED_LONG_SIDE = 1536  # 3x the network's 512

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def set_max_pixels(pixels: int) -> None:
    """Change the largest photo accepted (pixels), here and in Pillow's decompression-bomb check."""
    global MAX_PIXELS
    MAX_PIXELS = int(pixels)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def size_problem(width: int, height: int, max_pixels: int | None = None) -> str | None:
    """Why a photo of width x height is too large for this engine, or None."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width * height <= limit:
        return None
    return (
        f"{width}x{height} pixels ({_mp(width * height)}) is more than this engine's limit of {_mp(limit)}; "
        "scale the photo down"
    )


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1e7 else f"{pixels / 1e6:.2g} MP"


def bomb_problem(exc: Exception) -> str:
    """The sentence for Pillow's own refusal (it fires in ``Image.open`` beyond twice the limit)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = _mp(int(found.group(1))) if found else "the photo"
    return f"{size} is more than this engine's limit of {_mp(MAX_PIXELS)}; scale the photo down"


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

    @property
    def network_size(self) -> tuple[int, int]:
        """(h, w) of the network input, also when ``tensor`` was moved to a store (see :func:`load_photos`)."""
        height, width = self.rgb.shape[:2]
        return (width, height) if self.transposed else (height, width)


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


def read_rgb(path: str | os.PathLike, reduce_to: int | None = None) -> np.ndarray:
    """Decode a photo to uint8 RGB [H, W, 3] with EXIF orientation applied (full size)."""
    return read_photo(path, reduce_to)[0]


def read_photo(path: str | os.PathLike, reduce_to: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a photo: (uint8 RGB [H, W, 3] with EXIF orientation applied, (W, H) of the oriented original).

    The size is checked from the header first (:data:`MAX_PIXELS`). With ``reduce_to``, a photo of more than
    :data:`REDUCE_FROM` pixels is decoded at a reduced scale whose long side stays at least ``reduce_to``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    _register_heif()
    try:
        with Image.open(path) as im:
            width, height = im.size
            problem = size_problem(width, height)
            if problem:
                raise ImageError(f"{path}: {problem}")
            if reduce_to and width * height > REDUCE_FROM:
                im = _reduced(im, reduce_to)
            else:
                im.load()
            oriented = ImageOps.exif_transpose(im)
            swapped = oriented.size != im.size
            return np.asarray(_to_rgb(oriented)), ((height, width) if swapped else (width, height))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {bomb_problem(exc)}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def _reduced(im: Image.Image, long_side: int) -> Image.Image:
    """The image decoded at the smallest power-of-two scale keeping its long side >= ``long_side``."""
    factor = 1
    while max(im.size) // (factor * 2) >= long_side and factor < 8:
        factor *= 2
    if factor == 1:
        im.load()
        return im
    if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
        im.draft(im.mode, (-(-im.size[0] // factor), -(-im.size[1] // factor)))  # DCT scaling: never decoded big
        im.load()
        return im
    im.load()
    return im.reduce(factor)


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
    resized = F.interpolate(
        cropped[None], size=(target[1], target[0]), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return resized, (x0, y0, x1, y1)


def load_photo(path: str | os.PathLike, resize: str = "512", patch_size: int = 16) -> Photo:
    """Read, orient, crop/resize (``resize`` '512' or 'none') and lay out one photo.

    A photo over :data:`REDUCE_FROM` pixels is decoded reduced for '512' (the crop box is still given in the
    original's pixels)."""
    rgb, original = read_photo(path, REDUCED_LONG_SIDE if resize == "512" else None)
    height, width = rgb.shape[:2]
    least = MIN_SIDE.get(resize, 32)
    if min(width, height) < least:
        raise ImageError(f"{path}: {width}x{height} pixels is too small (the short side needs at least {least} px)")
    tensor = to_network(rgb)
    if resize == "512":
        tensor, box = resize_512(tensor)
    elif resize == "none":
        if height % patch_size or width % patch_size:
            raise ImageError(
                f"{path}: {width}x{height} pixels; with --resize none both sides must be multiples of "
                f"{patch_size} (use --resize 512 to resize and crop like the official loader)"
            )
        box = (0, 0, width, height)
    else:
        raise ValueError(f"unknown resize mode {resize!r} (expected '512' or 'none')")
    processed = to_uint8(tensor) if resize == "512" else rgb
    transposed = tensor.shape[1] > tensor.shape[2]
    network = tensor.transpose(1, 2).contiguous() if transposed else tensor
    if original != (width, height):  # decoded reduced: the crop box in the original's pixels
        sx, sy = original[0] / width, original[1] / height
        box = (
            round(box[0] * sx),
            round(box[1] * sy),
            min(original[0], round(box[2] * sx)),
            min(original[1], round(box[3] * sy)),
        )
    return Photo(Path(path), processed, network, original, box, transposed)


def load_photos(
    paths: list[str | os.PathLike],
    resize: str = "512",
    inputs: MutableSequence[torch.Tensor] | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Photo]:
    """Load every photo, or raise one :class:`ImageError` listing every bad file.

    ``inputs`` (one slot per path, e.g. a disk-backed store): each network input goes there as its photo is
    loaded and the photo keeps an empty ``tensor``, so a job's RAM does not hold every photo's float32 input.
    ``progress(fraction loaded)`` before each photo; what it raises (a job's ``Cancelled``) stops the loading.
    """
    photos, problems = [], []
    for index, path in enumerate(paths):
        if progress is not None:
            progress(index / len(paths))
        try:
            photo = load_photo(path, resize)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        if inputs is not None:
            inputs[index] = photo.tensor
            photo = replace(photo, tensor=torch.empty(0))
        photos.append(photo)
    if problems:
        raise ImageError(
            "; ".join(problems)
            if len(problems) < 4
            else f"{len(problems)} photos cannot be used: " + "; ".join(problems[:3]) + "; ..."
        )
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
