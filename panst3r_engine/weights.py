"""Weights registry, user cache, and resumable MD5-checked downloads.

The PanSt3R checkpoints are under NAVER LABS Europe's non-commercial licence,
so this MIT code never bundles them: users fetch them once into a cache, after
accepting the licence once. Downloads stream into ``<file>.part`` (resumed with
an HTTP Range request after a transport failure) and reach their final path
only after the MD5 matched, so a file at the final path is always complete
(the HTTP part is :mod:`panst3r_engine.httpfetch`).

Environment: ``PANST3R_HOME`` (cache root), ``PANST3R_OFFLINE=1`` (never touch
the network), ``PANST3R_WEIGHTS_BASE_URL`` (a mirror laid out like the cache's
``weights/`` folder). The ``weights`` CLI commands live in
:mod:`panst3r_engine.weights_cli`.
"""

from __future__ import annotations

import datetime
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from panst3r_engine.httpfetch import DownloadError, Progress, fetch, human_size, md5_file

ENV_HOME, ENV_OFFLINE, ENV_BASE_URL = "PANST3R_HOME", "PANST3R_OFFLINE", "PANST3R_WEIGHTS_BASE_URL"
DOWNLOAD_HINT = "python -m panst3r_engine weights download {id} --accept-license"


class WeightsError(RuntimeError):
    """Weights that cannot be found, fetched or trusted, with one sentence saying what to do."""


class LicenseNotAccepted(WeightsError):
    """A download refused because its licence has not been accepted yet."""


@dataclass(frozen=True)
class Licence:
    id: str
    name: str
    summary: str
    url: str
    needs_acceptance: bool = True


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable item: a single file, or (``files`` non-empty) a folder of files under ``url``."""

    id: str
    filename: str
    url: str
    md5: str | None
    size_hint: int | None
    licence_id: str
    description: str
    files: tuple[str, ...] = field(default=())

    @property
    def is_folder(self) -> bool:
        return bool(self.files)


LICENCES = {lic.id: lic for lic in (
    Licence("panst3r-noncommercial", "PanSt3R Non-Commercial License (NAVER LABS Europe)",
            "The PanSt3R checkpoints are published by NAVER LABS Europe under the PanSt3R Non-Commercial License: "
            "you may use them for non-commercial purposes only. They are not part of this MIT-licensed engine, "
            "which never bundles them; read the full terms before use.",
            "https://github.com/naver/panst3r (LICENSE)"),
    Licence("apache-2.0", "Apache License 2.0",
            "The SigLIP model google/siglip-base-patch16-224 is published by Google under the Apache License 2.0.",
            "https://www.apache.org/licenses/LICENSE-2.0", needs_acceptance=False),
)}

_NAVER = "https://download.europe.naverlabs.com/ComputerVision/PanSt3R"
_SIGLIP = "https://huggingface.co/google/siglip-base-patch16-224/resolve/main"
# size hints: fp32 parameter counts from the reference sheet (§1), not published sizes.
REGISTRY = {e.id: e for e in (
    WeightsEntry("panst3r-v1-512", "panst3r_v1_512_5ds.pth", f"{_NAVER}/panst3r_v1_512_5ds.pth",
                 "901ac0e17153f9b15decaa796511b1be", 3_500_000_000, "panst3r-noncommercial",
                 "PanSt3R v1 (PixelShuffle upscaler), 512 px, 5 training datasets"),
    WeightsEntry("panst3r-v2-512", "panst3r_v2_512_5ds.pth", f"{_NAVER}/panst3r_v2_512_5ds.pth",
                 "6a7a47a2ea635de05af45ded8dcabd57", 3_200_000_000, "panst3r-noncommercial",
                 "PanSt3R v2 (LoftUp upscaler), 512 px, 5 training datasets"),
    WeightsEntry("siglip-text", "siglip-base-patch16-224", _SIGLIP, None, 813_000_000, "apache-2.0",
                 "SigLIP base text tower for class embeddings (Hugging Face google/siglip-base-patch16-224)",
                 files=("config.json", "model.safetensors", "spiece.model", "tokenizer_config.json",
                        "special_tokens_map.json")),
)}
ALIASES = {"v1": "panst3r-v1-512", "v2": "panst3r-v2-512", "siglip": "siglip-text"}
_SUPERSEDED_MD5 = {"c3836c108f1bf441fe53776e825cd1ac": "the first PanSt3R v1 release, replaced on 2025-11-26"}


class WeightsRow(NamedTuple):
    id: str
    file: str
    present: bool
    size: int | None
    path: Path


# ---------------------------------------------------------------- cache and registry


def cache_root() -> Path:
    """``$PANST3R_HOME``, else the platform's per-user cache folder (never the package folder)."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "panst3r" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "panst3r"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "panst3r"


def weights_dir() -> Path:
    return cache_root() / "weights"


def get_entry(spec: str | WeightsEntry) -> WeightsEntry:
    """A registry entry from an id or alias; entries pass through so tests and mirrors can use their own."""
    if isinstance(spec, WeightsEntry):
        return spec
    entry = REGISTRY.get(ALIASES.get(spec, spec))
    if entry is None:
        raise WeightsError(f"unknown weights id '{spec}'; known ids: {', '.join([*REGISTRY, *ALIASES])}")
    return entry


def licence_of(entry: WeightsEntry) -> Licence:
    return LICENCES.get(entry.licence_id) or Licence(entry.licence_id, entry.licence_id,
                                                     f"These weights are under the licence '{entry.licence_id}'.", "")


def weights_path(spec: str | WeightsEntry) -> Path:
    """Where the file (or folder) of ``spec`` is, or will be after a download."""
    return weights_dir() / get_entry(spec).filename


def is_present(spec: str | WeightsEntry) -> bool:
    entry, path = get_entry(spec), weights_path(spec)
    return all((path / f).is_file() for f in entry.files) if entry.is_folder else path.is_file()


def source_url(entry: WeightsEntry, name: str | None = None, base_url: str | None = None) -> str:
    """URL of the file (``name`` inside a folder entry); a base URL mirrors the ``weights/`` folder layout."""
    base = base_url or os.environ.get(ENV_BASE_URL)
    if entry.is_folder:
        folder = f"{base.rstrip('/')}/{entry.filename}" if base else entry.url.rstrip("/")
        return f"{folder}/{name or ''}"
    return f"{base.rstrip('/')}/{entry.filename}" if base else entry.url


def offline() -> bool:
    """``PANST3R_OFFLINE`` set to anything but empty/0/false/no: never touch the network."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _place_by_hand(entry: WeightsEntry) -> str:
    """Which file to download from which URL, and where to put it."""
    path = weights_path(entry)
    if entry.is_folder:
        return f"download {', '.join(entry.files)} from {source_url(entry, '')} into the folder {path}"
    return f"download {entry.filename} from {source_url(entry)} and place it at {path}"


def manual_instructions(entry: WeightsEntry) -> str:
    """How to get the weights: by hand, or with the download command."""
    return f"{_place_by_hand(entry)}, or run `{DOWNLOAD_HINT.format(id=entry.id)}`"


def resolve_weights(spec: str | os.PathLike) -> Path:
    """A usable weights path from a registry id, an alias ('v1', 'v2') or a file path; never downloads."""
    if isinstance(spec, str) and ALIASES.get(spec, spec) in REGISTRY:
        entry = get_entry(spec)
        if is_present(entry):
            return weights_path(entry)
        raise WeightsError(f"weights '{entry.id}' are not in the cache: {manual_instructions(entry)}")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    raise WeightsError(f"'{spec}' is neither an existing file nor a weights id ({', '.join([*REGISTRY, *ALIASES])})")


# ---------------------------------------------------------------- licence


def licence_record(licence_id: str) -> Path:
    return cache_root() / "licenses" / f"{licence_id}.accepted"


def is_accepted(licence_id: str) -> bool:
    return licence_record(licence_id).is_file()


def accept_licence(licence_id: str) -> Path:
    """Record acceptance once, with a timestamp, so later downloads need no flag."""
    record = licence_record(licence_id)
    record.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record.write_text(f"accepted {stamp}\n{LICENCES.get(licence_id, Licence(licence_id, licence_id, '', '')).name}\n")
    return record


def licence_text(lic: Licence) -> str:
    return f"{lic.name}\n{lic.summary}\nFull text: {lic.url}" if lic.url else f"{lic.name}\n{lic.summary}"


def require_licence(entry: WeightsEntry, accept: bool) -> None:
    """Pass when the licence needs no acceptance or was accepted (now, recorded, or before); else refuse."""
    lic = licence_of(entry)
    if not lic.needs_acceptance or is_accepted(lic.id):
        return
    if accept:
        accept_licence(lic.id)
        return
    raise LicenseNotAccepted(f"{licence_text(lic)}\nTo accept it once and download, run "
                             f"`{DOWNLOAD_HINT.format(id=entry.id)}` (or pass accept_license=True).")


# ---------------------------------------------------------------- download


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


# ---------------------------------------------------------------- verify and list


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


def list_weights(entries: list[WeightsEntry] | None = None) -> list[WeightsRow]:
    """One row per registry entry: whether it is cached, its size on disk, and its path."""
    rows = []
    for entry in entries or list(REGISTRY.values()):
        path, present = weights_path(entry), is_present(entry)
        files = [path / f for f in entry.files] if entry.is_folder else [path]
        size = sum(f.stat().st_size for f in files if f.is_file()) if present else None
        rows.append(WeightsRow(entry.id, entry.filename + ("/" if entry.is_folder else ""), present, size, path))
    return rows


def add_weights_commands(weights_subparsers) -> None:
    """Add ``list``, ``download``, ``verify`` and ``path`` under ``weights`` (see :mod:`weights_cli`)."""
    from panst3r_engine.weights_cli import add_weights_commands as add

    add(weights_subparsers)
