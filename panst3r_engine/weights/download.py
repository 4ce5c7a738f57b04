"""Downloading registry items into the cache and verifying what is there.

Downloads stream into ``<file>.part`` (resumed with an HTTP Range request after
a transport failure) and reach their final path only after the checksum matched,
so a file at the final path is always complete (HTTP in :mod:`.http`).

A folder entry (the SigLIP text tower) is fetched file by file into a hidden
sibling staging folder, ``.<folder>.partial``, renamed to its final name only
once every file is there: a failed download never leaves a folder that looks
like a model but is not one (the next run resumes from the staging folder).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from panst3r_engine.config import ENV_BASE_URL, ENV_OFFLINE, offline
from panst3r_engine.weights.http import DownloadError, Progress, fetch, human_size, md5_file
from panst3r_engine.weights.licence import require_licence
from panst3r_engine.weights.registry import (
    _SUPERSEDED_MD5,
    DOWNLOAD_HINT,
    WeightsEntry,
    WeightsError,
    _place_by_hand,
    get_entry,
    is_present,
    manual_instructions,
    source_url,
    weights_path,
)


def download(
    spec: str | WeightsEntry,
    accept_license: bool = False,
    progress: Progress | None = None,
    base_url: str | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 30.0,
) -> Path:
    """Fetch ``spec`` into the cache (resuming a ``.part``) and return its final path; a present file is re-checked."""
    entry = get_entry(spec)
    target = weights_path(entry)
    if is_present(entry):
        ok, message = verify(entry)
        if not ok:
            raise WeightsError(message)
        return target
    if offline():
        raise WeightsError(
            f"offline mode ({ENV_OFFLINE}) is on, so '{entry.id}' cannot be downloaded: {_place_by_hand(entry)}"
        )
    require_licence(entry, accept_license)
    hint = f"set {ENV_BASE_URL} to a mirror"
    try:
        if entry.is_folder:
            _download_folder(entry, target, progress, base_url, chunk_size, timeout, hint)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch(
                source_url(entry, base_url=base_url), target, entry.md5, progress, chunk_size, timeout, mirror_hint=hint
            )
    except DownloadError as exc:  # the sentence ends with the way around the network
        raise WeightsError(f"{exc}; or {_place_by_hand(entry)}") from exc
    return target


def staging_dir(target: Path) -> Path:
    """The hidden sibling a folder entry is downloaded into before it is renamed to ``target``."""
    return target.with_name(f".{target.name}.partial")


def _download_folder(
    entry: WeightsEntry,
    target: Path,
    progress: Progress | None,
    base_url: str | None,
    chunk_size: int,
    timeout: float,
    hint: str,
) -> None:
    """Fetch the missing files into the staging folder; move them into ``target`` only when all are there.

    Complete files already in an (incomplete) ``target`` are kept, and a ``.part`` left there by an
    older engine is resumed rather than fetched again.
    """
    staging = staging_dir(target)
    staging.mkdir(parents=True, exist_ok=True)
    needed = [n for n in entry.files if not _nonempty(target / n)]
    for name in needed:
        old_part, part = target / f"{name}.part", staging / f"{name}.part"
        if old_part.is_file() and not part.exists() and not (staging / name).exists():
            os.replace(old_part, part)
        if not _nonempty(staging / name):
            fetch(
                source_url(entry, name, base_url), staging / name, None, progress, chunk_size, timeout, mirror_hint=hint
            )
    if target.is_dir():  # an incomplete folder: complete it file by file (each move is atomic)
        for name in needed:
            os.replace(staging / name, target / name)
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def verify(spec: str | WeightsEntry) -> tuple[bool, str]:
    """Check a cached item against the registry: MD5 for files, presence and self-consistency for folders."""
    entry = get_entry(spec)
    path = weights_path(entry)
    if not is_present(entry):
        return False, f"{entry.id}: not downloaded; {manual_instructions(entry)}"
    if entry.is_folder:
        return _verify_folder(entry, path)
    if entry.md5 is None:
        return path.stat().st_size > 0, f"{entry.id}: present, {human_size(path.stat().st_size)} (no MD5 known)"
    actual = md5_file(path).hexdigest()
    if actual == entry.md5.lower():
        return True, f"{entry.id}: MD5 {actual} ok ({path})"
    known = f" ({_SUPERSEDED_MD5[actual]})" if actual in _SUPERSEDED_MD5 else ""
    return False, (
        f"{entry.id}: {path} has MD5 {actual}{known} but {entry.md5} is expected; "
        f"delete it and run `{DOWNLOAD_HINT.format(id=entry.id)}`"
    )


def _verify_folder(entry: WeightsEntry, folder: Path) -> tuple[bool, str]:
    for name in entry.files:
        f = folder / name
        problem = (
            "is empty"
            if f.stat().st_size == 0
            else (_safetensors_problem(f) if name.endswith(".safetensors") else None)
        )
        if problem:
            return False, f"{entry.id}: {f} {problem}; delete it and run `{DOWNLOAD_HINT.format(id=entry.id)}`"
    return True, f"{entry.id}: all {len(entry.files)} files present ({folder})"


def _safetensors_problem(path: Path) -> str | None:
    """A truncated .safetensors file is detectable without a checksum: its header states its own length."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return "is truncated (its header is cut off)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        return "is not a valid safetensors file"
    return None if 8 + n + end == size else f"has {size} bytes but its header describes {8 + n + end}"
