"""What every executor offers the job manager: the job it is handed, how a job ends, and the interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress


@dataclass(frozen=True)
class JobRun:
    """One job as an executor sees it: the uploads (in order), where the bundle must appear, the options."""

    id: str
    photos: list[Path]
    bundle_dir: Path
    options: JobOptions
    vocab_file: Path | None = None  # the client's own classes; ``options.vocab`` names this file
    embeddings_file: Path | None = None  # class embeddings (.npz) named by ``options.vocab_embeddings`` (eval run)


@dataclass(frozen=True)
class JobOutcome:
    """A job that ended done: the bundle is at ``JobRun.bundle_dir``."""

    segments: int
    model_id: str | None


class Executor(Protocol):
    """Runs jobs; ``run`` raises ``Cancelled`` (the progress saw its cancel event) or an exception for a failure."""

    kind: str  # "local" or "ray", shown by /v1/health
    slots: int  # jobs that may run at the same time (one manager thread each)

    def prepare(self, slot: int) -> bool:
        """Block until ``slot`` can take a job (a worker is up); False once the executor is closing."""

    def run(self, slot: int, job: JobRun, progress: Progress) -> JobOutcome:
        """Run ``job`` on ``slot``, reporting through ``progress`` (whose update raises ``Cancelled``)."""

    def model_id(self) -> str | None:
        """The id of the model jobs run with, once one has loaded."""

    def close(self) -> None:
        """Release the workers (after the manager's threads have stopped or given up)."""
