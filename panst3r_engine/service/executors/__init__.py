"""Where jobs run: in this process (:class:`LocalExecutor`, the default) or on a Ray cluster of warm workers.

The :class:`~panst3r_engine.service.jobs.JobManager` owns records, the queue, cancellation and the files; an
executor only runs one job in one of its ``slots`` (one worker thread of the manager each) and says how it ended.
Both executors honour the same contract, so the HTTP API cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress

__all__ = ["Executor", "JobRun", "JobOutcome", "make_executor"]


@dataclass(frozen=True)
class JobRun:
    """One job as an executor sees it: the uploads (in order), where the bundle must appear, the options."""

    id: str
    photos: list[Path]
    bundle_dir: Path
    options: JobOptions
    vocab_file: Path | None = None  # the client's own classes; ``options.vocab`` names this file


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


def make_executor(
    cluster: str | None, base: JobOptions, *, models=None, preload: bool = False, **cluster_options
) -> Executor:
    """The local executor, or a Ray one for ``cluster`` (``ray``, ``auto`` or ``ray://HOST:PORT``; its workers
    load their model when they start, so ``preload`` is implied)."""
    if not cluster:
        from panst3r_engine.service.executors.local import LocalExecutor

        return LocalExecutor(base, models, preload=preload)
    from panst3r_engine.service.executors.ray_cluster import RayExecutor

    return RayExecutor(cluster, base, **cluster_options)
