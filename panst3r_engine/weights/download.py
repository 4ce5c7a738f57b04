"""Downloading registry items into the cache and verifying what is there.

Downloads stream into ``<file>.part`` (resumed with an HTTP Range request after
a transport failure) and reach their final path only after the checksum matched,
so a file at the final path is always complete (HTTP in :mod:`.http`).
"""

from __future__ import annotations

import json
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


def download(spec: str | WeightsEntry, accept_license: bool = False, progress: Progress | None = None,
             base_url: str | None = None, chunk_size: int = 1 << 20, timeout: float = 30.0) -> Path:
    """Fetch ``spec`` into the cache (resuming a ``.part``) and return its final path; a present file is re-checked."""
    entry = get_entry(spec)
    target = weights_path(entry)
    if is_present(entry):
        ok, message = verify(entry)
        if not ok:
            raise WeightsError(message)
        return target
    if offline():
        raise WeightsError(f"offline mode ({ENV_OFFLINE}) is on, so '{entry.id}' cannot be downloaded: "
                           f"{_place_by_hand(entry)}")
    require_licence(entry, accept_license)
    if entry.is_folder:  # files already there were complete when moved into place: fetch the rest
        jobs = [(source_url(entry, n, base_url), target / n, None) for n in entry.files if not (target / n).is_file()]
    else:
        jobs = [(source_url(entry, base_url=base_url), target, entry.md5)]
    jobs[0][1].parent.mkdir(parents=True, exist_ok=True)
    hint = f"set {ENV_BASE_URL} to a mirror"
    try:
        for url, dest, md5 in jobs:
            fetch(url, dest, md5, progress, chunk_size, timeout, mirror_hint=hint)
    except DownloadError as exc:
        raise WeightsError(str(exc)) from exc
    return target


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
    return False, (f"{entry.id}: {path} has MD5 {actual}{known} but {entry.md5} is expected; "
                   f"delete it and run `{DOWNLOAD_HINT.format(id=entry.id)}`")


def _verify_folder(entry: WeightsEntry, folder: Path) -> tuple[bool, str]:
    for name in entry.files:
        f = folder / name
        problem = "is empty" if f.stat().st_size == 0 else (
            _safetensors_problem(f) if name.endswith(".safetensors") else None)
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

