"""Moving a job's files between machines that share no file system: uploads in, the bundle back as a zip.

Whatever comes back from a worker is untrusted: member names are checked (no absolute paths, no ``..``, no
links, plain names only), sizes and counts are bounded before anything is written, and the bundle is read
back with the engine's own bundle checks before it replaces anything.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.errors import PanSt3RError
from panst3r_engine.service.download import zip_stream

MAX_BUNDLE_BYTES = 64 << 30
MAX_BUNDLE_FILES = 100_000
SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$")


class TransferError(PanSt3RError):
    """A worker's result that cannot be accepted."""

    code = "worker_result"


def read_files(paths: list[Path]) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` for each upload, in order: what travels to a worker."""
    return [(path.name, path.read_bytes()) for path in paths]


def write_files(files: list[tuple[str, bytes]], folder: Path) -> list[Path]:
    """Write uploads received from the front end into ``folder``; names are checked like bundle members."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = []
    for name, data in files:
        if not isinstance(name, str) or not SAFE_PART.match(name) or name in (".", ".."):
            raise TransferError(f"an upload name {str(name)[:60]!r} is not a plain file name")
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def pack_bundle(folder: Path) -> bytes:
    """The bundle as one zip (the same archive ``GET /v1/jobs/{id}/bundle`` streams)."""
    return b"".join(zip_stream(folder))


def unpack_bundle(data: bytes, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> None:
    """Unpack a worker's zip into ``dest`` (made here, must not exist) and check it is a readable bundle;
    on any refusal nothing is left at ``dest``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _checked_members(archive, max_bytes)
            dest.mkdir(mode=0o700)
            try:
                for info, parts in members:
                    target = dest.joinpath(*parts)
                    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "xb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    os.chmod(target, 0o600)
                read_bundle(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise TransferError(f"the worker's bundle archive is unreadable ({exc}); run the job again") from None


def _checked_members(archive: zipfile.ZipFile, max_bytes: int) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    infos = archive.infolist()
    if len(infos) > MAX_BUNDLE_FILES:
        raise TransferError(f"the worker's bundle holds {len(infos)} files, more than a bundle can have")
    if sum(info.file_size for info in infos) > max_bytes:
        raise TransferError(f"the worker's bundle would unpack to more than {max_bytes >> 30} GB")
    members, seen = [], set()
    for info in infos:
        parts = info.filename.split("/")
        mode = info.external_attr >> 16
        if (
            info.is_dir()
            or stat.S_ISLNK(mode)
            or not all(SAFE_PART.match(part) for part in parts)
            or len(parts) > 4
            or info.filename in seen
        ):
            raise TransferError(f"the worker's bundle holds an unsafe member {info.filename[:80]!r}")
        seen.add(info.filename)
        members.append((info, parts))
    return members
