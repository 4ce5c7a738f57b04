"""A minimal PNG codec (zlib + numpy): decoding the bundle's panoptic maps, encoding photos to upload.

The add-on cannot rely on Pillow inside Blender, and ``bpy.data.images``
would colour-manage the ids. Panoptic PNGs are 8-bit RGB (or RGBA / grey),
non-interlaced, as written by the engine; anything else is refused with a
sentence. Row filters follow the PNG specification, section 9.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


class PngError(ValueError):
    """A PNG this decoder cannot read, with a sentence naming the problem."""


def _chunks(data: bytes, name: str):
    """Yield (type, payload) of every chunk."""
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length:
            raise PngError(f"{name} is truncated")
        yield kind, payload
        pos += 12 + length
        if kind == b"IEND":
            return
    raise PngError(f"{name} is truncated (no IEND chunk)")


def _paeth_row(line: bytearray, prev: bytes, bpp: int) -> None:
    """Undo the Paeth filter in place (sequential along the row)."""
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        line[i] = (line[i] + pred) & 255


def _average_row(line: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        line[i] = (line[i] + ((a + prev[i]) >> 1)) & 255


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, name: str) -> np.ndarray:
    """uint8 [H, stride]: the image bytes with the per-row filters undone."""
    if len(raw) != height * (stride + 1):
        raise PngError(f"{name} has {len(raw)} bytes of image data, expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum per channel, modulo 256
            cur = np.cumsum(line.reshape(-1, bpp).astype(np.uint32), axis=0).astype(np.uint8).ravel()
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):
            buf = bytearray(line.tobytes())
            (_average_row if kind == 3 else _paeth_row)(buf, prev.tobytes(), bpp)
            cur = np.frombuffer(bytes(buf), np.uint8)
        else:
            raise PngError(f"{name} uses unknown row filter {kind}")
        out[y] = cur
        prev = out[y]
    return out


def read_png(path: str | Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG.

    Returns:
        uint8 [H, W, C] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    """
    path = Path(path)
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PngError(f"cannot read {name} ({exc.strerror or exc})") from None
    if not data.startswith(_SIGNATURE):
        raise PngError(f"{name} is not a PNG file")
    header, idat = None, []
    for kind, payload in _chunks(data, name):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat.append(payload)
    if header is None:
        raise PngError(f"{name} has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise PngError(f"{name} must be an 8-bit, non-interlaced grey/RGB/RGBA PNG "
                       f"(found bit depth {depth}, colour type {colour}, interlace {interlace})")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise PngError(f"{name} has corrupt image data ({exc})") from None
    channels = _CHANNELS[colour]
    pixels = _unfilter(raw, height, width * channels, channels, name)
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
    Path(path).write_bytes(_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
                           + chunk(b"IEND", b""))
