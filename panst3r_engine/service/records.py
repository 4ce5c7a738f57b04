"""One job's record: what clients see, and its ``job.json`` so a restarted engine still lists it.

A job folder is ``<jobs_dir>/<id>/`` (0700, files 0600) with ``.panst3r-job``
(written first: the service made it; removed once ``job.json`` exists), ``input/`` (the uploads, removed when the
job ends), ``bundle/`` (the result, only when done) and ``job.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from panst3r_engine.service.errors import scrub
from panst3r_engine.service.options import ClientOptions

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
RECORD = "job.json"
MARKER = ".panst3r-job"  # written first into every job folder the service makes
ENGINE_STOPPED = {
    "code": "engine_stopped",
    "message": "the engine stopped before this job finished; submit the photos again",
}


def new_job_id(now: float | None = None) -> str:
    """Sortable and unguessable: ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (``2025-01-31T12:00:00.123Z``), None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    """Mutable state of one job; the manager changes it only under its lock."""

    id: str
    folder: Path
    client: ClientOptions
    photos: list[str]  # file names in input/, in upload order
    created: float
    state: str = "queued"
    stage: str | None = None
    fraction: float = 0.0
    message: str = ""
    error: dict | None = None
    started: float | None = None
    finished: float | None = None
    segments: int | None = None
    has_splats: bool = False
    purge_when_finished: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def input_dir(self) -> Path:
        return self.folder / "input"

    @property
    def bundle_dir(self) -> Path:
        return self.folder / "bundle"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    def public(self, position: int | None = None) -> dict:
        """The ``GET /v1/jobs/{id}`` body (messages without this machine's folders: clients may be remote)."""
        error = self.error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error = {**error, "message": scrub(error["message"], self.folder.parent)}
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "fraction": round(self.fraction, 4),
            "message": scrub(self.message, self.folder.parent),
            "error": error,
            "created": iso(self.created),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "num_images": len(self.photos),
            "segments": self.segments,
            "has_splats": self.has_splats,
            "position": position,
        }

    def record(self) -> dict:
        """What ``job.json`` holds: the public fields with raw timestamps, plus the options."""
        body = self.public()
        body.pop("position")
        body.update(
            created=self.created,
            started=self.started,
            finished=self.finished,
            photos=self.photos,
            options=self.client.values,
            record_version=1,
        )
        return body


def save_record(job: Job) -> None:
    """Write ``job.json`` atomically (temp file + rename), so a crash never leaves half a record."""
    path = job.folder / RECORD
    tmp = path.with_name(f".{RECORD}.{secrets.token_hex(4)}.tmp")
    try:
        write_private(tmp, json.dumps(job.record(), indent=1).encode("utf-8"))
        os.replace(tmp, path)
    except OSError as exc:  # the job folder was removed (purged) meanwhile, or the disk is full
        log.warning("cannot write %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def write_private(path: Path, data: bytes) -> None:
    """Write a new file only this user can read (0600; job data may be someone's photos)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_job_folder(jobs_dir: Path, job_id: str) -> Path:
    """Create ``<jobs_dir>/<job_id>/`` (0700) holding the service's MARKER, so that a folder left by a crash
    before its record was written is recognisably ours and can be removed at the next start."""
    folder = jobs_dir / job_id
    folder.mkdir(mode=0o700)
    write_private(folder / MARKER, b"made by the PanSt3R engine service\n")
    return folder


def is_orphan(folder: Path, known: set[str] | dict) -> bool:
    """A job folder this service made (id-named, with MARKER, not a link) whose id has no loaded record."""
    return (
        ID_PATTERN.match(folder.name) is not None
        and folder.name not in known
        and not folder.is_symlink()
        and folder.is_dir()
        and (folder / MARKER).is_file()
    )


def load_record(folder: Path) -> Job | None:
    """The job in ``folder``; one that was queued or running when the engine stopped becomes failed."""
    try:
        data = json.loads((folder / RECORD).read_text("utf-8"))
        job = Job(
            id=data["id"],
            folder=folder,
            client=ClientOptions(dict(data.get("options") or {})),
            photos=list(data["photos"]),
            created=float(data["created"]),
            state=data["state"],
            stage=data.get("stage"),
            fraction=float(data.get("fraction") or 0.0),
            message=data.get("message") or "",
            error=data.get("error"),
            started=data.get("started"),
            finished=data.get("finished"),
            segments=data.get("segments"),
            has_splats=bool(data.get("has_splats")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring job folder %s: unreadable %s (%s)", folder, RECORD, exc)
        return None
    if job.id != folder.name or job.state not in STATES:
        log.warning("ignoring job folder %s: its %s does not match", folder, RECORD)
        return None
    if not job.is_finished:
        job.state, job.error, job.message = "failed", dict(ENGINE_STOPPED), ENGINE_STOPPED["message"]
        job.finished = job.finished or time.time()
        save_record(job)
    return job


def load_records(jobs_dir: Path) -> list[Job]:
    """Every job under ``jobs_dir`` (folders named like job ids only), oldest first."""
    if not jobs_dir.is_dir():
        return []
    jobs = [load_record(p) for p in sorted(jobs_dir.iterdir()) if p.is_dir() and ID_PATTERN.match(p.name)]
    return sorted((j for j in jobs if j is not None), key=lambda j: j.created)
