"""The one error type of the service, turned into ``{"error": {"code", "message"}}`` by the app."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from panst3r_engine.errors import PanSt3RError


class ApiError(PanSt3RError):
    """A request the service refuses, with an HTTP status, a stable code and a sentence a user can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def error_body(code: str, message: str) -> dict:
    """The JSON body of every error response."""
    return {"error": {"code": code, "message": message}}


def _spellings(folder: str | os.PathLike) -> set[str]:
    path = Path(folder).expanduser()
    found = {str(path)}
    try:
        found.add(str(path.resolve()))
    except OSError:
        pass
    return {f for f in found if len(f) > 1}


def scrub(text: str, jobs_dir: str | os.PathLike | None = None) -> str:
    """``text`` without this machine's absolute folders, for a remote client.

    A job's ``input/`` folder disappears (``a.jpg: not readable``), other job paths become ``<jobs>/...``,
    and the cache root, the engine's package folder, the temporary folder and the home folder become
    ``<cache>``, ``<engine>``, ``<tmp>`` and ``~`` (longest first, so the most specific name wins).
    """
    from panst3r_engine.config import cache_root

    if not text:
        return text
    names: list[tuple[str, str]] = []
    if jobs_dir is not None:
        names += [(s, "<jobs>") for s in _spellings(jobs_dir)]
    names += [(s, "<cache>") for s in _spellings(cache_root())]
    names += [(s, "<engine>") for s in _spellings(Path(__file__).resolve().parents[1])]
    names += [(s, "<tmp>") for s in _spellings(tempfile.gettempdir())]
    names += [(s, "~") for s in _spellings(Path.home())]
    for prefix, label in sorted(names, key=lambda n: len(n[0]), reverse=True):
        if label == "<jobs>":  # <jobs>/<id>/input/a.jpg -> a.jpg
            text = _drop_input_folders(text, prefix)
        text = text.replace(prefix, label)
    return text


def _drop_input_folders(text: str, jobs_prefix: str) -> str:
    import re

    pattern = re.escape(jobs_prefix) + r"[\\/]\d{8}-\d{6}-[0-9a-f]{6}[\\/]input[\\/]"
    return re.sub(pattern, "", text)
