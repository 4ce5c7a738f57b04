"""Frames of a video as a job's photos: sample evenly, keep the sharpest, drop near-duplicates.

A phone walk-through has far more frames than a job needs, many of them blurred by motion and many nearly
identical when the phone pauses. The sampler decodes the video once (PyAV, which ships its own FFmpeg: the
``video`` extra), looks at three candidate times per wanted frame, keeps the sharpest of each three (variance
of the Laplacian, Pertuz et al. 2013) and drops a frame that looks almost the same as the one kept before it
(mean absolute difference of small grey thumbnails).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panst3r_engine.pipeline.images import ImageError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mts", ".m2ts", ".3gp", ".mpg", ".mpeg", ".wmv", ".flv"}
)
DEFAULT_FRAMES = 30
CANDIDATES_PER_FRAME = 3
DUPLICATE_DIFFERENCE = 2.0  # mean absolute grey difference (0-255) of 32x24 thumbnails below which frames match
MAX_FRAME_PIXELS = 40_000_000  # an 8K frame is 33 MP; more is refused before decoding
INSTALL_HINT = "pip install 'panst3r-engine[video]' (PyAV)"


@dataclass(frozen=True)
class Frame:
    """One frame taken from a video."""

    index: int  # frame number in decoding order
    time: float  # seconds from the start
    rgb: np.ndarray  # uint8 [H, W, 3]


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image: low for blurred frames."""
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    return float(lap.var())


def thumbnail(rgb: np.ndarray, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """float32 [h, w] grey thumbnail by block averaging (cheap, enough to compare frames)."""
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    rows = np.linspace(0, grey.shape[0], size[1] + 1).astype(int)
    cols = np.linspace(0, grey.shape[1], size[0] + 1).astype(int)
    return np.array(
        [[grey[r0:r1, c0:c1].mean() for c0, c1 in zip(cols[:-1], cols[1:])] for r0, r1 in zip(rows[:-1], rows[1:])],
        np.float32,
    )


def select_frames(candidates: list[Frame], wanted: int) -> list[Frame]:
    """The sharpest candidate of each of ``wanted`` consecutive groups, then near-duplicates dropped."""
    if not candidates:
        return []
    groups = np.array_split(np.arange(len(candidates)), min(wanted, len(candidates)))
    picked = [candidates[max(group, key=lambda i: sharpness(candidates[i].rgb))] for group in groups if len(group)]
    kept, last = [], None
    for frame in picked:
        thumb = thumbnail(frame.rgb)
        if last is not None and float(np.abs(thumb - last).mean()) < DUPLICATE_DIFFERENCE:
            continue
        kept.append(frame)
        last = thumb
    return kept


def _open(path: Path):
    try:
        import av
    except ImportError:
        raise ImageError(f"{path.name}: reading videos needs PyAV; {INSTALL_HINT}") from None
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ImageError(f"{path.name}: not a readable video ({exc}); convert it to H.264 MP4 and try again") from None
    if not container.streams.video:
        container.close()
        raise ImageError(f"{path.name}: has no video stream")
    return av, container


def _candidate_times(duration: float, wanted: int, fps: float | None) -> np.ndarray:
    """Times to look at: CANDIDATES_PER_FRAME per wanted frame, evenly over the video (or at ``fps``)."""
    if fps:
        count = max(1, int(duration * fps * CANDIDATES_PER_FRAME))
    else:
        count = max(1, wanted * CANDIDATES_PER_FRAME)
    return (np.arange(count) + 0.5) * (duration / count)


def read_frames(path: str | os.PathLike, wanted: int | None = None, fps: float | None = None) -> list[Frame]:
    """Frames of ``path``: about ``wanted`` (default DEFAULT_FRAMES) evenly spread, or ``fps`` per second."""
    path = Path(path)
    wanted = wanted or DEFAULT_FRAMES
    av, container = _open(path)
    with container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_FRAME_PIXELS:
            raise ImageError(f"{path.name}: frames of {width}x{height} are too large; scale the video down first")
        duration = _duration(stream, container)
        times = _candidate_times(duration, wanted, fps) if duration > 0 else None
        stream.thread_type = "AUTO"
        candidates = _decode(av, container, stream, times, wanted * CANDIDATES_PER_FRAME, path)
    if fps and duration > 0:
        wanted = max(1, round(duration * fps))
    frames = select_frames(candidates, wanted)
    if len(frames) < 1:
        raise ImageError(f"{path.name}: no frame could be decoded; convert it to H.264 MP4 and try again")
    return frames


def _duration(stream, container) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _decode(av, container, stream, times: np.ndarray | None, fallback_count: int, path: Path) -> list[Frame]:
    """The first frame at or after each candidate time (every frame when the duration is unknown, capped)."""
    out, next_time = [], 0
    try:
        for index, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 30)
            if times is None:
                if len(out) < fallback_count:
                    out.append(Frame(index, t, frame.to_ndarray(format="rgb24")))
                continue
            if next_time < len(times) and t >= times[next_time] - 1e-6:
                out.append(Frame(index, t, frame.to_ndarray(format="rgb24")))
                while next_time < len(times) and times[next_time] <= t + 1e-6:
                    next_time += 1
            if next_time >= len(times):
                break
    except av.error.FFmpegError as exc:
        if not out:
            raise ImageError(f"{path.name}: the video cannot be decoded ({exc}); convert it to H.264 MP4") from None
    return out


def write_frames(frames: list[Frame], folder: Path, stem: str) -> list[Path]:
    """Frames as lossless PNG files named ``<stem>_f<index>.png`` (the job then reads them as photos)."""
    from PIL import Image

    paths = []
    for frame in frames:
        path = folder / f"{stem}_f{frame.index:06d}.png"
        Image.fromarray(frame.rgb).save(path)
        paths.append(path)
    return paths


def expand_videos(
    paths: list, folder: Path, wanted: int | None = None, fps: float | None = None
) -> tuple[list[Path], list[dict | None]]:
    """Photo paths with every video replaced by its frames (written into ``folder``), and per photo where it came
    from: ``{"video": file name, "frame": index, "time": seconds}`` for frames, None for photos."""
    out: list[Path] = []
    sources: list[dict | None] = []
    for number, item in enumerate(paths):
        path = Path(item)
        if not is_video(path):
            out.append(path)
            sources.append(None)
            continue
        frames = read_frames(path, wanted, fps)
        stem = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in path.stem)[:80] or f"video{number}"
        out.extend(write_frames(frames, folder, f"{stem}_{number}" if len(paths) > 1 else stem))
        sources.extend({"video": path.name, "frame": f.index, "time": round(f.time, 4)} for f in frames)
    return out, sources
