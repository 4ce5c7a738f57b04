"""Downloading registry items into the cache and verifying what is there.

Downloads stream into ``<file>.part`` (resumed with an HTTP Range request after
a transport failure) and reach their final path only after the checksum matched,
so a file at the final path is always complete (HTTP in :mod:`.http`).

A folder entry (the SigLIP text tower) is fetched file by file into a hidden
sibling staging folder, ``.<folder>.partial``, renamed to its final name only
once every file is there: a failed download never leaves a folder that looks
like a model but is not one (the next run resumes from the staging folder).
Each of its files is checked against the registry's pins (size, SHA-256; the
safetensors self-check where no hash is pinned) before the folder is renamed,
and by :func:`verify`; a file that fails is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

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
    deadline_s: float | None = None,
) -> Path:
    """Fetch ``spec`` into the cache (resuming a ``.part``) and return its final path; a present file is re-checked.

    ``deadline_s`` bounds each file's whole transfer (default: its expected size at 100 kB/s plus 5 minutes).
    """
    entry = get_entry(spec)
    for companion in entry.companions:  # first, so the main file's presence means the pair is complete
        download(companion, accept_license, progress, base_url, chunk_size, timeout, deadline_s)
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
            _download_folder(entry, target, progress, base_url, chunk_size, timeout, hint, deadline_s)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            url = source_url(entry, base_url=base_url)
            fetch(url, target, entry.md5, progress, chunk_size, timeout, hint, **_limits(entry, None, deadline_s))
    except DownloadError as exc:  # the sentence ends with the way around the network
        raise WeightsError(f"{exc}; or {_place_by_hand(entry)}") from exc
    return target


def _limits(entry: WeightsEntry, name: str | None, deadline_s: float | None) -> dict[str, Any]:
    """What bounds one transfer: the size the registry allows, the deadline, the hosts a redirect may reach."""
    return {"max_bytes": entry.max_bytes(name), "deadline_s": deadline_s, "hosts": entry.hosts}


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
    deadline_s: float | None,
) -> None:
    """Fetch the missing files into the staging folder; move them into ``target`` only when all are there
    and every file (kept ones too) matches its pins.

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
            url = source_url(entry, name, base_url)
            fetch(url, staging / name, None, progress, chunk_size, timeout, hint, **_limits(entry, name, deadline_s))
    for name in entry.files:
        _delete_if_wrong(entry, name, staging / name if name in needed else target / name, base_url)
    if target.is_dir():  # an incomplete folder: complete it file by file (each move is atomic)
        for name in needed:
            os.replace(staging / name, target / name)
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _delete_if_wrong(entry: WeightsEntry, name: str, path: Path, base_url: str | None) -> None:
    """A file that does not match its pins is deleted, so that the next run fetches it again."""
    problem = _file_problem(entry, name, path)
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{name} from {source_url(entry, name, base_url)} {problem}, so it was deleted; run the download "
            f"again, and if it fails again the server or a proxy is serving a different file"
        )


def _file_problem(entry: WeightsEntry, name: str, path: Path) -> str | None:
    """Why a folder file is not the registry's one: empty, wrong size or SHA-256, or a broken safetensors."""
    pin, size = entry.pin(name), path.stat().st_size
    if size == 0:
        return "is empty"
    if pin.size is not None and size != pin.size:
        return f"has {size} bytes but {pin.size} are expected"
    if pin.sha256 is not None:
        actual = sha256_file(path)
        return None if actual == pin.sha256.lower() else f"has SHA-256 {actual} but {pin.sha256} is expected"
    return _safetensors_problem(path) if name.endswith(".safetensors") else None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: str | WeightsEntry) -> tuple[bool, str]:
    """Check a cached item against the registry: MD5 for files, pinned size and SHA-256 for folder files."""
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
        problem = _file_problem(entry, name, f)
        if problem:
            return False, f"{entry.id}: {f} {problem}; delete it and run `{DOWNLOAD_HINT.format(id=entry.id)}`"
    hashed = sum(entry.pin(n).sha256 is not None for n in entry.files)
    return True, f"{entry.id}: all {len(entry.files)} files present, {hashed} with SHA-256 ok ({folder})"


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
