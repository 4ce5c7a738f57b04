"""Uploaded photos and videos: safe file names inside the job folder, a quick check of each, free disk space.

Client file names are only a hint for the bundle's image names: every path
component is dropped and the rest reduced to a safe set of characters, so no
upload can land outside the job's ``input/`` folder. A file whose name ends
like a video (.mp4, .mov, ...) is checked as a video (:mod:`.videos`), any
other as a photo.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import unicodedata
from pathlib import Path
from typing import BinaryIO, Protocol

from PIL import Image, UnidentifiedImageError

from panst3r_engine.pipeline import images as _images  # the pixel limit (also PIL's decompression-bomb limit)
from panst3r_engine.pipeline.video import is_video
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.videos import VideoRequest

GB = 1 << 30
MAX_NAME = 100
PIL_SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "HEIF": ".heic",
    "MPO": ".jpg",
    "GIF": ".gif",
}


class Upload(Protocol):
    """What the service needs from an uploaded file (Werkzeug's ``FileStorage`` fits)."""

    filename: str | None
    stream: BinaryIO


def safe_name(name: str | None, index: int) -> str:
    """A file name without any directory part, made of letters, digits and ``._-`` only."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = stem.strip("._-")[:MAX_NAME] or f"image_{index:04d}"
    suffix = "".join(ch for ch in suffix if ch.isalnum())[:8].lower()
    return f"{stem}.{suffix}" if suffix else stem


def unique_names(names: list[str | None]) -> list[str]:
    """Safe names, unique ignoring case and extension (the bundle names images by stem)."""
    out, seen = [], set()
    for i, name in enumerate(names):
        safe = safe_name(name, i)
        stem, dot, suffix = safe.rpartition(".") if "." in safe else (safe, "", "")
        candidate, k = stem, 1
        while candidate.casefold() in seen:
            candidate, k = f"{stem}_{k}", k + 1
        seen.add(candidate.casefold())
        out.append(candidate + dot + suffix)
    return out


def save_uploads(
    files: list[Upload], folder: Path, videos: VideoRequest | None = None, max_images: int | None = None
) -> list[Path]:
    """Write every upload into ``folder`` (in upload order) and check each is an image or a video.

    Raises :class:`ApiError` 422 naming every file that is empty, not an image, or a video this engine will not
    decode (``videos`` gives the limits), and 400 when the photos plus the frames the videos give are more than
    ``max_images``.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    videos = videos or VideoRequest()
    paths, problems, bad_videos, frames = [], [], 0, 0
    for upload, name in zip(files, unique_names([f.filename for f in files]), strict=True):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)  # private
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.stream, out, 1 << 20)
        if is_video(path):
            problem, count = videos.check(path)
            bad_videos += problem is not None
        else:
            problem, count = image_problem(path), 1
        if problem:
            problems.append(f"{upload.filename or name}: {problem}")
        else:
            paths.append(path if is_video(path) else _with_image_suffix(path))
            frames += count
    if problems:
        raise _unusable(problems, len(files), bad_videos)
    if max_images is not None and frames > max_images:
        raise ApiError(
            400,
            "too_many_images",
            f"the photos and the frames taken from the videos make about {frames} images, more than this engine's "
            f"limit of {max_images}; ask for fewer frames (video_frames, video_fps) or split the job",
        )
    return paths


def _unusable(problems: list[str], count: int, bad_videos: int) -> ApiError:
    shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
    if bad_videos == len(problems):
        return ApiError(422, "bad_video", shown)
    return ApiError(
        422,
        "bad_image",
        f"{len(problems)} of {count} files cannot be used as photos "
        f"(send JPEG, PNG, WebP, TIFF or BMP images, or MP4, MOV, MKV, WebM or AVI videos): {shown}",
    )


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image file, or None (header and integrity check, no full decode).

    The pixel count is checked from the header before anything else (:data:`images.MAX_PIXELS`)."""
    if path.stat().st_size == 0:
        return "the file is empty"
    _register_heif()
    try:
        with Image.open(path) as im:
            problem = _images.size_problem(*im.size)
            if problem:
                return problem
            im.verify()
    except Image.DecompressionBombError as exc:
        return _images.bomb_problem(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({exc})"
    return None


def _with_image_suffix(path: Path) -> Path:
    """Give a photo without a known extension one matching its content."""
    if path.suffix:
        return path
    with Image.open(path) as im:
        suffix = PIL_SUFFIX.get(im.format or "", ".img")
    return path.rename(path.with_name(path.name + suffix))


def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_RESERVED_LOCK = threading.Lock()
_reserved = 0  # bytes of uploads being saved right now, which disk_usage does not show yet


def check_disk_space(folder: Path, upload_bytes: int, min_free: int = GB) -> None:
    """Refuse a job (507) when the jobs disk could fill up: keep ~1 GB and 3x the upload free, counting the
    uploads other requests are saving at this moment."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free - _reserved
    need = max(min_free, 3 * max(upload_bytes, 0))
    if free < need:
        raise _no_space(folder, free, need)


@contextlib.contextmanager
def reserve_disk(folder: Path, upload_bytes: int, min_free: int = GB):
    """Check the space (see :func:`check_disk_space`) and hold ``upload_bytes`` of it while the upload is saved,
    so concurrent uploads cannot all pass the same check and fill the disk; a disk that fills anyway is a 507."""
    global _reserved
    size = max(upload_bytes, 0)
    with _RESERVED_LOCK:
        check_disk_space(folder, size, min_free)
        _reserved += size
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise _no_space(folder, shutil.disk_usage(folder).free, 3 * size) from None
        raise
    finally:
        with _RESERVED_LOCK:
            _reserved -= size


def _no_space(folder: Path, free: int, need: int) -> ApiError:
    return ApiError(
        507,
        "insufficient_storage",
        f"only {max(free, 0) / GB:.1f} GB are free on the jobs disk, and a job of this size needs "
        f"about {need / GB:.1f} GB; delete old jobs or start the engine with --jobs-dir on a larger disk",
    )
