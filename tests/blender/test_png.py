"""The add-on's PNG decoder: every row filter against Pillow, sizes checked before decoding, bombs refused."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.bundle.png import PngError, read_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, channels: int, body: bytes, header: bytes | None = None) -> bytes:
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0) if header is None else header
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _filtered(pixels: np.ndarray, kinds: np.ndarray) -> bytes:
    """The PNG image data of uint8 [H, W, C] with filter kinds[y] on row y (forward filters, PNG spec section 9)."""
    height, width, bpp = pixels.shape
    x = np.zeros((height + 1, width + 1, bpp), np.int16)
    x[1:, 1:] = pixels
    a, b, c, cur = x[1:, :-1], x[:-1, 1:], x[:-1, :-1], x[1:, 1:]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    preds = np.stack([np.zeros_like(a), a, b, (a + b) >> 1, paeth])
    pred = preds[kinds, np.arange(height)]
    rows = ((cur - pred) & 255).astype(np.uint8).reshape(height, -1)
    return np.concatenate([kinds.astype(np.uint8)[:, None], rows], axis=1).tobytes()


def _write(path: Path, pixels: np.ndarray, kinds: np.ndarray) -> Path:
    height, width, channels = pixels.shape
    path.write_bytes(_png(width, height, channels, zlib.compress(_filtered(pixels, kinds))))
    return path


def _pixels(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.add.outer(np.arange(height), 2 * np.arange(width))[..., None] * np.arange(1, channels + 1)
    return ((smooth + rng.integers(0, 40, (height, width, channels))) % 256).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(23, 41), (41, 23), (1, 9), (9, 1)])
@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4, "mixed"])
def test_every_filter_decodes_like_pillow(tmp_path: Path, channels: int, shape: tuple[int, int], kind) -> None:
    height, width = shape
    pixels = _pixels(height, width, channels, seed=channels)
    kinds = np.random.default_rng(3).integers(0, 5, height) if kind == "mixed" else np.full(height, kind)
    path = _write(tmp_path / "f.png", pixels, kinds)
    with Image.open(path) as im:
        pillow = np.asarray(im).reshape(height, width, channels)
    np.testing.assert_array_equal(pillow, pixels)  # the test's encoder is right
    np.testing.assert_array_equal(read_png(path, size=(width, height)), pixels)


def test_pillow_written_images_decode(tmp_path: Path) -> None:
    pixels = _pixels(120, 90, 3, seed=5)
    Image.fromarray(pixels).save(tmp_path / "p.png", optimize=True)
    np.testing.assert_array_equal(read_png(tmp_path / "p.png", size=(90, 120)), pixels)


def test_size_other_than_expected_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.png", _pixels(8, 6, 3, 0), np.zeros(8, int))
    with pytest.raises(PngError, match="is 6x8 pixels, but the bundle says 6x9"):
        read_png(path, size=(6, 9))


def test_huge_declared_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png(100_000, 100_000, 3, zlib.compress(b"\0" * 1000)))
    with pytest.raises(PngError, match="more than the .* allowed"):
        read_png(path)


def test_zlib_bomb_stops_at_the_expected_size(tmp_path: Path) -> None:
    """100 x 100 RGB declared (30 kB of pixels) and a few kB of zlib inflating to 200 MB: refused, little memory."""
    inflater = zlib.compressobj(9)
    body = inflater.compress(b"\0" * (200 << 20)) + inflater.flush()
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(100, 100, 3, body))
    tracemalloc.start()
    try:
        with pytest.raises(PngError, match="more image data than"):
            read_png(path, size=(100, 100))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 << 20, peak


@pytest.mark.parametrize("header", [b"\0\0\0\x10", b"\0" * 13 + b"extra"])
def test_malformed_header_is_a_png_error(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(_png(4, 4, 3, zlib.compress(b"\0" * 52), header=header))
    with pytest.raises(PngError, match="malformed PNG header"):
        read_png(path)


def test_truncated_and_unknown_filter_are_png_errors(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(PngError, match="malformed PNG header"):
        read_png(tmp_path / "t.png")
    (tmp_path / "u.png").write_bytes(_png(2, 2, 3, zlib.compress(b"\x07" + b"\0" * 6 + b"\0" * 7)))
    with pytest.raises(PngError, match="unknown row filter 7"):
        read_png(tmp_path / "u.png")


def test_benchmark_paeth_1500(tmp_path: Path) -> None:
    """A printout, not an assert: the machine's load decides the time."""
    pixels = _pixels(1500, 1500, 3, seed=9)
    path = _write(tmp_path / "big.png", pixels, np.full(1500, 4))
    start = time.perf_counter()
    decoded = read_png(path, size=(1500, 1500))
    print(f"\nread_png 1500x1500 RGB Paeth: {time.perf_counter() - start:.2f} s")
    np.testing.assert_array_equal(decoded, pixels)
