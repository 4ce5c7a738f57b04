"""Photo size limits: refused from the header before decoding; large JPEGs decoded reduced (draft)."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from panst3r_engine.pipeline import images
from panst3r_engine.pipeline.images import ImageError, load_photo


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed-looking PNG whose header claims width x height grey pixels (no real image data)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [12000, 20000, 28000])
def test_huge_photos_are_refused_from_the_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(side, side))
    started = time.perf_counter()
    with pytest.raises(
        ImageError,
        match=rf"{side * side // 10**6} MP\)? is more than this engine's limit of "
        r"100 MP; scale the photo down",
    ):
        load_photo(path)
    assert time.perf_counter() - started < 1.0


def test_the_limit_can_be_changed(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(png_claiming(3000, 1000))  # 3 MP
    try:
        images.set_max_pixels(2_000_000)
        with pytest.raises(ImageError, match="limit of 2 MP"):
            load_photo(path)
    finally:
        images.set_max_pixels(100_000_000)
    assert Image.MAX_IMAGE_PIXELS == 100_000_000


def _jpeg(tmp_path, width: int, height: int, orientation: int | None = None):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx / width * 255, yy / height * 255, 128 + 100 * np.sin(xx / 97) * np.cos(yy / 61)], -1)
    path = tmp_path / f"big_{width}x{height}.jpg"
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=90, exif=exif.tobytes())
    return path, rgb


def test_a_large_jpeg_decodes_reduced_with_the_same_result(tmp_path):
    path, _ = _jpeg(tmp_path, 5200, 3900)  # 20 MP
    decoded, original = images.read_photo(path, images.REDUCED_LONG_SIDE)
    assert decoded.shape == (1950, 2600, 3) and original == (5200, 3900)  # DCT-scaled by 1/2, never full size
    photo = load_photo(path)
    assert photo.original_size == (5200, 3900) and photo.crop_box == (0, 0, 5200, 3900)
    assert photo.processed_size == (512, 384)
    full = (torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    expected = F.interpolate(full[None], size=(384, 512), mode="bilinear", align_corners=False, antialias=True)[0]
    assert (photo.tensor - expected).abs().mean() < 0.02  # within about 2 grey levels of a full decode


def test_a_large_rotated_jpeg_keeps_original_coordinates(tmp_path):
    path, _ = _jpeg(tmp_path, 5600, 3200, orientation=6)  # stored landscape, shown portrait; 7:4 -> crop
    photo = load_photo(path)
    assert photo.original_size == (3200, 5600) and photo.processed_size == (288, 512) and photo.transposed
    full = images.crop_box_for(3200, 5600, (288, 512))  # what a full decode gives: (25, 0, 3175, 5600)
    assert np.abs(np.subtract(photo.crop_box, full)).max() <= 2  # the reduced decode's box, in original pixels


def test_photos_up_to_16_megapixels_decode_in_full(tmp_path):
    path, _ = _jpeg(tmp_path, 4000, 3000)  # a 12 MP phone photo: bit-exact with the official loader
    decoded, original = images.read_photo(path, images.REDUCED_LONG_SIDE)
    assert decoded.shape == (3000, 4000, 3) and original == (4000, 3000)
