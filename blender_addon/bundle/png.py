"""A minimal PNG codec (zlib + numpy): decoding the bundle's panoptic maps, encoding photos to upload.

The add-on cannot rely on Pillow inside Blender, and ``bpy.data.images``
would colour-manage the ids. Panoptic PNGs are 8-bit RGB (or RGBA / grey),
non-interlaced, as written by the engine; anything else is refused with a
sentence. Row filters follow the PNG specification, section 9.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
MAX_PIXELS = 1 << 26  # without an expected size: 8192 x 8192 (the bundle's MAX_IMAGE_PIXELS)


class PngError(ValueError):
    """A PNG this decoder cannot read, with a sentence naming the problem."""


def _chunks(data: bytes, name: str):
    """Yield (type, payload) of every chunk."""
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        if len(payload) != length:
            raise PngError(f"{name} is truncated")
        yield kind, payload
        pos += 12 + length
        if kind == b"IEND":
            return
    raise PngError(f"{name} is truncated (no IEND chunk)")


def _unfilter_rows(rows: np.ndarray, kinds: np.ndarray, bpp: int) -> np.ndarray:
    """Undo None/Sub/Up row by row (each row needs only the row above): uint8 [H, stride]."""
    out = np.zeros_like(rows)
    prev = np.zeros(rows.shape[1], np.uint8)
    for y, kind in enumerate(kinds):
        if kind == 1:  # Sub: running sum per channel, modulo 256
            out[y] = np.cumsum(rows[y].reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        else:
            out[y] = rows[y] + prev if kind == 2 else rows[y]
        prev = out[y]
    return out


def _unfilter_diagonals(rows: np.ndarray, kinds: np.ndarray, bpp: int) -> np.ndarray:
    """Undo any mix of filters, one anti-diagonal (y + x = d) of pixels at a time: uint8 [H, stride].

    Average and Paeth make every pixel depend on its left, upper and upper-left neighbours, so a row is a
    sequential chain; the pixels of one anti-diagonal depend only on the two diagonals before it, so each is
    one numpy step and an image takes H + W - 1 steps instead of H * W. The pixels are first skewed into
    ``skew[d + 2, k + 1]`` (k = y or x, whichever axis is shorter; zeros around) so a diagonal is a
    contiguous row and its neighbours are the two rows before it.
    """
    height, width = rows.shape[0], rows.shape[1] // bpp
    by_row = height <= width  # k = y; otherwise k = x
    ys, xs = np.indices((height, width))
    d_index, k_index = ys + xs + 2, (ys if by_row else xs) + 1
    skew = np.zeros((height + width + 1, min(height, width) + 1, bpp), np.int16)
    skew[d_index, k_index] = rows.reshape(height, width, bpp)
    kinds = kinds.astype(np.int16)
    for d in range(height + width - 1):
        if by_row:
            k0, k1 = max(0, d - width + 1), min(height - 1, d)
            kind = kinds[k0 : k1 + 1, None]
        else:
            k0, k1 = max(0, d - height + 1), min(width - 1, d)
            kind = kinds[d - k1 : d - k0 + 1][::-1, None]
        same, shifted, c = skew[d + 1, k0 + 1 : k1 + 2], skew[d + 1, k0 : k1 + 1], skew[d, k0 : k1 + 1]
        a, b = (same, shifted) if by_row else (shifted, same)
        skew[d + 2, k0 + 1 : k1 + 2] = (skew[d + 2, k0 + 1 : k1 + 2] + _predict(a, b, c, kind)) & 255
    return skew[d_index, k_index].astype(np.uint8).reshape(height, width * bpp)


def _predict(a: np.ndarray, b: np.ndarray, c: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """The predictor of each pixel from its left (a), upper (b) and upper-left (c) neighbours, per filter kind."""
    low, high = kind.min(), kind.max()
    if low == high and low < 3:
        return (0, a, b)[low]
    pred = np.where(kind == 1, a, np.where(kind == 2, b, 0)) if low < 3 else 0
    if low <= 3 <= high:
        pred = np.where(kind == 3, (a + b) >> 1, pred)
    if high == 4:
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = paeth if low == 4 else np.where(kind == 4, paeth, pred)
    return pred


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, name: str) -> np.ndarray:
    """uint8 [H, stride]: the image bytes with the per-row filters undone (PNG specification, section 9)."""
    if len(raw) != height * (stride + 1):
        raise PngError(f"{name} has {len(raw)} bytes of image data, expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    kinds = rows[:, 0]
    if kinds.max() > 4:
        raise PngError(f"{name} uses unknown row filter {kinds.max()}")
    if (kinds >= 3).any():
        return _unfilter_diagonals(rows[:, 1:], kinds, bpp)
    return _unfilter_rows(rows[:, 1:], kinds, bpp)


def _header(fh, name: str, size: tuple[int, int] | None, max_pixels: int) -> tuple[int, int, int]:
    """(width, height, channels) from the leading IHDR chunk, checked before any image data is read."""
    head = fh.read(len(_SIGNATURE) + 8 + 13)
    if not head.startswith(_SIGNATURE):
        raise PngError(f"{name} is not a PNG file")
    if len(head) < len(_SIGNATURE) + 21 or head[8:16] != b"\x00\x00\x00\rIHDR":
        raise PngError(f"{name} has a malformed PNG header (no 13-byte IHDR chunk first)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise PngError(
            f"{name} must be an 8-bit, non-interlaced grey/RGB/RGBA PNG "
            f"(found bit depth {depth}, colour type {colour}, interlace {interlace})"
        )
    if size is not None and (width, height) != tuple(size):
        raise PngError(f"{name} is {width}x{height} pixels, but the bundle says {size[0]}x{size[1]}")
    if not 0 < width * height <= max_pixels:
        raise PngError(f"{name} declares {width}x{height} pixels, more than the {max_pixels} allowed")
    return width, height, _CHANNELS[colour]


def _inflate(idat: bytes, expected: int, name: str) -> bytes:
    """The image data, never inflating more than ``expected`` + 1 bytes (a zlib bomb stops there)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(idat, expected + 1)
    except zlib.error as exc:
        raise PngError(f"{name} has corrupt image data ({exc})") from None
    if len(raw) > expected or inflater.unconsumed_tail:
        raise PngError(f"{name} holds more image data than its {expected} bytes of pixels")
    return raw


def read_png(path: str | Path, size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG whose size is checked before it is read.

    Args:
        size: the (width, height) the caller expects, e.g. from the bundle's manifest; anything else is refused.
        max_pixels: the largest image accepted when ``size`` is not given.
    Returns:
        uint8 [H, W, C] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    """
    name = str(path)
    try:
        with open(path, "rb") as fh:
            width, height, channels = _header(fh, name, size, max_pixels)
            expected = height * (width * channels + 1)
            if os.fstat(fh.fileno()).st_size > 2 * expected + (1 << 20):
                raise PngError(f"{name} is far larger than a {width}x{height} image needs")
            fh.seek(0)
            data = fh.read()
    except OSError as exc:
        raise PngError(f"cannot read {name} ({exc.strerror or exc})") from None
    idat = b"".join(payload for kind, payload in _chunks(data, name) if kind == b"IDAT")
    pixels = _unfilter(_inflate(idat, expected, name), height, width * channels, channels, name)
    return pixels.reshape(height, width, channels)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Encode uint8 [H, W, 3 or 4] as an 8-bit RGB(A) PNG (no row filters)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width, channels = pixels.shape
    if channels not in (3, 4):
        raise PngError(f"write_png needs RGB or RGBA pixels, got {channels} channels")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6 if channels == 4 else 2, 0, 0, 0)
    Path(path).write_bytes(
        _SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")
    )
