"""Frames of a video as a job's photos: sample evenly, keep the sharpest, drop near-duplicates.

A phone walk-through has far more frames than a job needs, many of them blurred by motion and many nearly
identical when the phone pauses. The sampler decodes the video once (PyAV, which ships its own FFmpeg: the
``video`` extra), looks at three candidate times per wanted frame, keeps the sharpest of each three (variance
of the Laplacian, Pertuz et al. 2013) and drops a frame that looks almost the same as the one kept before it
(mean absolute difference of small grey thumbnails).

A video is also untrusted input (the service takes uploads): it is opened with the demuxer its suffix names
(never FFmpeg's guess, which could pick a playlist format that reads other files), only common camera codecs
are decoded, and :class:`VideoLimits` bounds its size, length and decoding work from the header, before any
frame is decoded, and again while decoding (a header can lie).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
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
CONVERT_HINT = "convert it to H.264 MP4 and try again"
# FFmpeg demuxer per suffix: the file is opened with this one only
CONTAINERS = {
    ".mp4": "mov",
    ".m4v": "mov",
    ".mov": "mov",
    ".3gp": "mov",
    ".mkv": "matroska",
    ".webm": "matroska",
    ".avi": "avi",
    ".mts": "mpegts",
    ".m2ts": "mpegts",
    ".mpg": "mpeg",
    ".mpeg": "mpeg",
    ".wmv": "asf",
    ".flv": "flv",
}
# decoders of what phones and cameras record (FFmpeg names); anything else is refused before decoding
CODECS = frozenset(
    {"h264", "hevc", "mpeg4", "vp8", "vp9", "av1", "libdav1d", "mjpeg", "prores", "mpeg1video", "mpeg2video"}
    | {"h263", "wmv3", "vc1", "flv1"}
)
PROBE_PACKETS = 2000  # packets read to find the first frame before the file counts as broken
GB = 1 << 30

FractionFn = Callable[[float], None]  # called after every decoded frame; may raise (Cancelled) to stop there


@dataclass(frozen=True)
class VideoLimits:
    """What one video may cost; the header is checked against these before any frame is decoded."""

    max_bytes: int = 64 * GB
    max_pixels: int = MAX_FRAME_PIXELS  # per frame
    max_seconds: float = 24 * 3600.0
    max_decoded: int = 10_000_000  # frames decoded per video (a header can understate the length)
    decode_seconds: float = 24 * 3600.0  # wall-clock budget for decoding one video
    max_memory: int = 16 * GB  # frames held in memory while the sharpest are chosen (those kept, plus two)


@dataclass(frozen=True)
class VideoInfo:
    """A video's stream as its header describes it."""

    codec: str
    width: int
    height: int
    seconds: float  # 0 when the header does not say
    rate: float  # frames per second (0 when unknown)


_limits = VideoLimits()


def set_video_limits(limits: VideoLimits) -> None:
    """The limits every later :func:`read_frames` applies (one engine process, one policy: the service's)."""
    global _limits
    _limits = limits


def video_limits() -> VideoLimits:
    return _limits


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


def planned_frames(info: VideoInfo, wanted: int | None, fps: float | None) -> int:
    """How many frames a video gives at most (the count, or its duration times ``fps``)."""
    if fps and info.seconds > 0:
        return max(1, round(info.seconds * fps))
    return wanted or DEFAULT_FRAMES


def check_video(
    path: str | os.PathLike, wanted: int | None = None, fps: float | None = None, limits: VideoLimits | None = None
) -> VideoInfo:
    """Open ``path`` as :func:`read_frames` will and decode its first frame only; raises :class:`ImageError`
    when it is not a readable video, uses another codec, or would cost more than ``limits`` allow."""
    path, limits = Path(path), limits or _limits
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageError(
            f"{path.name}: {_size(size)} is more than this engine's limit of {_size(limits.max_bytes)} per video; "
            "trim it or lower its quality"
        )
    av, container = _open(path)
    with container:
        stream = container.streams.video[0]
        info = _info(path, container, stream, limits)
        _check_memory(path, info, planned_frames(info, wanted, fps) + 2, limits)
        deadline = time.monotonic() + min(limits.decode_seconds, 60.0)
        try:
            for count, packet in enumerate(container.demux(stream)):
                if packet.decode():  # the last, empty packet flushes the decoder
                    return info
                if count >= PROBE_PACKETS or time.monotonic() > deadline:
                    break
        except av.error.FFmpegError as exc:
            raise ImageError(f"{path.name}: the video cannot be decoded ({_reason(exc)}); {CONVERT_HINT}") from None
    raise ImageError(f"{path.name}: no frame could be decoded; {CONVERT_HINT}")


class FrameChooser:
    """Keeps the sharpest candidate of each group of candidate slots and drops one that nearly repeats the frame
    kept before it; only the current group's best frame is held besides those kept (memory: the kept frames)."""

    def __init__(self, slots: int, wanted: int) -> None:
        sizes = [len(group) for group in np.array_split(np.arange(slots), max(1, min(wanted, slots)))]
        self._group_of = np.repeat(np.arange(len(sizes)), sizes)
        self.kept: list[Frame] = []
        self._group, self._best, self._score, self._last = -1, None, -1.0, None

    def add(self, frame: Frame, slot: int) -> None:
        """Offer the candidate taken for ``slot`` (slots come in increasing order)."""
        group = int(self._group_of[min(slot, len(self._group_of) - 1)])
        if group != self._group:
            self._close()
            self._group = group
        score = sharpness(frame.rgb)
        if self._best is None or score > self._score:
            self._best, self._score = frame, score

    def frames(self) -> list[Frame]:
        self._close()
        return self.kept

    def _close(self) -> None:
        if self._best is None:
            return
        thumb = thumbnail(self._best.rgb)
        if self._last is None or float(np.abs(thumb - self._last).mean()) >= DUPLICATE_DIFFERENCE:
            self.kept.append(self._best)
            self._last = thumb
        self._best, self._score = None, -1.0


def select_frames(candidates: list[Frame], wanted: int) -> list[Frame]:
    """The sharpest candidate of each of ``wanted`` consecutive groups, then near-duplicates dropped."""
    chooser = FrameChooser(len(candidates), wanted)
    for slot, frame in enumerate(candidates):
        chooser.add(frame, slot)
    return chooser.frames()


def _open(path: Path):
    """PyAV and the container, opened with the demuxer of the file's suffix (never a guessed one)."""
    try:
        import av
    except ImportError:
        raise ImageError(f"{path.name}: reading videos needs PyAV; {INSTALL_HINT}") from None
    demuxer = CONTAINERS.get(path.suffix.lower())
    if demuxer is None:
        raise ImageError(f"{path.name}: not a video type this engine reads ({', '.join(sorted(CONTAINERS))})")
    try:
        container = av.open(str(path), format=demuxer)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ImageError(f"{path.name}: not a readable video ({_reason(exc)}); {CONVERT_HINT}") from None
    if not container.streams.video:
        container.close()
        raise ImageError(f"{path.name}: has no video stream")
    return av, container


def _size(count: int) -> str:
    if count >= GB:
        return f"{count / GB:.1f} GB"
    return f"{count / (1 << 20):.1f} MB" if count >= 1 << 20 else f"{count / 1024:.0f} kB"


def _reason(exc: Exception) -> str:
    """FFmpeg's words without the file's path (the service never shows its folders)."""
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _info(path: Path, container, stream, limits: VideoLimits) -> VideoInfo:
    """The stream's header, checked against ``limits`` (codec, frame size, duration)."""
    context = stream.codec_context
    codec = context.name if context is not None else "unknown"
    if codec not in CODECS:
        raise ImageError(
            f"{path.name}: the video codec {codec!r} is not supported (send H.264, HEVC, VP9, AV1, MPEG-4 or MJPEG); "
            f"{CONVERT_HINT}"
        )
    width, height = int(context.width or 0), int(context.height or 0)
    if width <= 0 or height <= 0:
        raise ImageError(f"{path.name}: the video's header gives no frame size; {CONVERT_HINT}")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"{path.name}: frames of {width}x{height} are more than this engine's limit of "
            f"{limits.max_pixels / 1e6:g} megapixels; scale the video down first"
        )
    seconds = _duration(stream, container)
    if seconds > limits.max_seconds:
        raise ImageError(
            f"{path.name}: {seconds:.0f} s of video is longer than this engine's limit of {limits.max_seconds:.0f} s; "
            "trim it first"
        )
    rate = float(stream.average_rate or 0.0)
    return VideoInfo(codec, width, height, seconds, rate)


def _check_memory(path: Path, info: VideoInfo, frames: int, limits: VideoLimits) -> None:
    """The frames held while choosing (those kept, the group's best and the one decoded) must fit."""
    need = frames * info.width * info.height * 3
    if need > limits.max_memory:
        raise ImageError(
            f"{path.name}: holding {frames} frames of {info.width}x{info.height} needs "
            f"{_size(need)} of memory, more than this engine's {_size(limits.max_memory)}; ask for fewer frames "
            "(video_frames, video_fps) or scale the video down"
        )


def _candidate_times(duration: float, wanted: int, fps: float | None) -> np.ndarray:
    """Times to look at: CANDIDATES_PER_FRAME per wanted frame, evenly over the video (or at ``fps``)."""
    if fps:
        count = max(1, int(duration * fps * CANDIDATES_PER_FRAME))
    else:
        count = max(1, wanted * CANDIDATES_PER_FRAME)
    return (np.arange(count) + 0.5) * (duration / count)


def read_frames(
    path: str | os.PathLike,
    wanted: int | None = None,
    fps: float | None = None,
    limits: VideoLimits | None = None,
    progress: FractionFn | None = None,
) -> list[Frame]:
    """Frames of ``path``: about ``wanted`` (default DEFAULT_FRAMES) evenly spread, or ``fps`` per second.

    ``limits`` (default: those of :func:`set_video_limits`) are checked from the header first, then while decoding.
    ``progress`` gets the fraction of the video decoded after every decoded frame; whatever it raises (a job's
    ``Cancelled``) stops the decoding at that frame, the file closed and nothing kept."""
    path, limits = Path(path), limits or _limits
    av, container = _open(path)
    with container:
        stream = container.streams.video[0]
        info = _info(path, container, stream, limits)
        keep = planned_frames(info, wanted, fps)
        _check_memory(path, info, keep + 2, limits)
        times = _candidate_times(info.seconds, wanted or DEFAULT_FRAMES, fps) if info.seconds > 0 else None
        chooser = FrameChooser(len(times) if times is not None else keep * CANDIDATES_PER_FRAME, keep)
        stream.thread_type = "AUTO"
        _decode(av, container, stream, times, keep * CANDIDATES_PER_FRAME, path, limits, chooser, progress)
    frames = chooser.frames()
    if len(frames) < 1:
        raise ImageError(f"{path.name}: no frame could be decoded; {CONVERT_HINT}")
    return frames


def _duration(stream, container) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _decode(
    av,
    container,
    stream,
    times: np.ndarray | None,
    fallback_count: int,
    path: Path,
    limits: VideoLimits,
    chooser: FrameChooser,
    progress: FractionFn | None = None,
) -> None:
    """Offer ``chooser`` the first frame at or after each candidate time (the first frames when the duration is
    unknown), within the limits' frame count and decoding time; ``progress`` after every decoded frame."""
    offered, next_time, unoffered = 0, 0, None
    deadline = time.monotonic() + limits.decode_seconds
    try:
        for index, frame in enumerate(container.decode(stream)):
            if progress is not None:
                done = offered / fallback_count if times is None else next_time / len(times)
                progress(min(done, 1.0))
            if index >= limits.max_decoded:
                raise ImageError(
                    f"{path.name}: has more than this engine's limit of {limits.max_decoded} frames "
                    "per video; trim it first"
                )
            if time.monotonic() > deadline:
                raise ImageError(
                    f"{path.name}: decoding took longer than this engine's limit of {limits.decode_seconds:.0f} s; "
                    "trim the video or lower its resolution"
                )
            t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 30)
            if times is None:
                chooser.add(Frame(index, t, frame.to_ndarray(format="rgb24")), offered)
                offered += 1
                if offered >= fallback_count:
                    break
                continue
            unoffered = (index, t, frame)
            if next_time < len(times) and t >= times[next_time] - 1e-6:
                chooser.add(Frame(index, t, frame.to_ndarray(format="rgb24")), next_time)
                offered, unoffered = offered + 1, None
                while next_time < len(times) and times[next_time] <= t + 1e-6:
                    next_time += 1
            if next_time >= len(times):
                break
        else:  # the end: the last frame is on screen until then, so it stands for the times left
            if unoffered is not None and times is not None:
                index, t, frame = unoffered
                chooser.add(Frame(index, t, frame.to_ndarray(format="rgb24")), next_time)
                offered += 1
    except av.error.FFmpegError as exc:
        if not offered:
            raise ImageError(f"{path.name}: the video cannot be decoded ({_reason(exc)}); {CONVERT_HINT}") from None


def write_frames(frames: list[Frame], folder: Path, stem: str) -> list[Path]:
    """Frames as lossless PNG files named ``<stem>_f<index>.png`` (the job then reads them as photos)."""
    from PIL import Image

    paths = []
    for frame in frames:
        path = folder / f"{stem}_f{frame.index:06d}.png"
        Image.fromarray(frame.rgb).save(path)
        paths.append(path)
    return paths


def _share(progress: Callable[[float, str], None], done: int, total: int, message: str) -> FractionFn:
    """One video's fraction as the fraction of all ``total`` videos (``done`` of them decoded before it)."""
    return lambda fraction: progress((done + fraction) / total, message)


def expand_videos(
    paths: list,
    folder: Path,
    wanted: int | None = None,
    fps: float | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[Path], list[dict | None]]:
    """Photo paths with every video replaced by its frames (written into ``folder``), and per photo where it came
    from: ``{"video": file name, "frame": index, "time": seconds}`` for frames, None for photos.

    ``progress(fraction of the videos decoded, message)`` after every decoded frame; what it raises (a job's
    ``Cancelled``) stops the decoding there (the caller owns ``folder`` and removes what was written into it)."""
    out: list[Path] = []
    sources: list[dict | None] = []
    videos = [n for n, item in enumerate(paths) if is_video(Path(item))]
    for number, item in enumerate(paths):
        path = Path(item)
        if not is_video(path):
            out.append(path)
            sources.append(None)
            continue
        share = _share(progress, videos.index(number), len(videos), f"decoding {path.name}") if progress else None
        frames = read_frames(path, wanted, fps, progress=share)
        stem = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in path.stem)[:80] or f"video{number}"
        out.extend(write_frames(frames, folder, f"{stem}_{number}" if len(paths) > 1 else stem))
        sources.extend({"video": path.name, "frame": f.index, "time": round(f.time, 4)} for f in frames)
    return out, sources
