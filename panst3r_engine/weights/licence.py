"""Licence acceptance, recorded once per licence in the cache."""

from __future__ import annotations

import datetime
from pathlib import Path

from panst3r_engine.config import cache_root
from panst3r_engine.weights.registry import (
    DOWNLOAD_HINT,
    LICENCES,
    Licence,
    LicenseNotAccepted,
    WeightsEntry,
    licence_of,
)


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
    raise LicenseNotAccepted(
        f"{licence_text(lic)}\nTo accept it once and download, run "
        f"`{DOWNLOAD_HINT.format(id=entry.id)}` (or pass accept_license=True)."
    )
