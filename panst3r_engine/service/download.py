"""Streaming a bundle folder as a zip, without building the archive in memory or on disk.

``zipfile`` writes to any object with ``write``; data descriptors make that
work on an unseekable stream, and each chunk is handed to the response as
soon as it is written.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
STORED_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".npz", ".zip"}  # already compressed
ZIP64_FROM = 1 << 31


class _Sink:
    """A write-only stream that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def bundle_files(folder: Path) -> list[tuple[Path, str]]:
    """Every file of the bundle with its name inside the zip (relative, ``/``-separated), sorted."""
    return [(p, p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*")) if p.is_file()]


def zip_stream(folder: Path) -> Iterator[bytes]:
    """The zip of ``folder``'s files, ``manifest.json`` at the top level, in chunks of about 1 MB."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[arg-type]
        for path, name in bundle_files(folder):
            size = path.stat().st_size
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_STORED if path.suffix.lower() in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, archive.open(info, "w", force_zip64=size >= ZIP64_FROM) as dst:
                while block := src.read(CHUNK):
                    dst.write(block)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():  # the central directory
        yield data
