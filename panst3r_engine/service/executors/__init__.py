"""Where jobs run: in this process (:class:`LocalExecutor`, the default) or on a Ray cluster of warm workers.

The :class:`~panst3r_engine.service.jobs.JobManager` owns records, the queue, cancellation and the files; an
executor only runs one job in one of its ``slots`` (one worker thread of the manager each) and says how it ended.
Both executors honour the same contract, so the HTTP API cannot tell them apart.
"""

from __future__ import annotations

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.executors.base import Executor, JobOutcome, JobRun

__all__ = ["Executor", "JobOutcome", "JobRun", "make_executor"]


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
