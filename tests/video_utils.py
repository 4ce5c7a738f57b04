"""Short phone-like videos made in the test with PyAV: a pan along a textured strip, H.264 (or MPEG-4) in MP4."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def strip(width: int, height: int, seed: int = 7) -> np.ndarray:
    """uint8 [H, W, 3]: gradients plus coloured blocks, so windows of it differ from each other."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    for _ in range(24):
        x0, y0 = rng.integers(0, width - width // 8), rng.integers(0, height - height // 4)
        img[y0 : y0 + height // 4, x0 : x0 + width // 8] = rng.integers(0, 255, 3)
    return img


def pan_frames(count: int = 30, width: int = 128, height: int = 96, step: int = 6) -> list[np.ndarray]:
    """``count`` frames of a camera panning ``step`` pixels per frame."""
    wide = strip(width + step * count, height)
    return [np.ascontiguousarray(wide[:, i * step : i * step + width]) for i in range(count)]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str | None = None) -> Path:
    """Encode ``frames`` (uint8 RGB, even sizes) into ``path``; default codec H.264 where PyAV has it."""
    import av

    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = {"rawvideo": "rgb24", "png": "rgb24", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def corrupt_payload(path: Path) -> Path:
    """Zero the coded frames (the ``mdat`` box of an MP4) and keep the header: the file still opens and
    describes its stream, but no frame decodes."""
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start : start - 8 + size] = bytes(size - 8)
    path.write_bytes(bytes(data))
    return path
