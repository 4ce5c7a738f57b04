"""A fixed list of jobs on an executor's slots, outside the service (``eval run --cluster``).

The same workers, dispatch, transfer and failure handling as ``serve --cluster`` (:class:`RayExecutor`), without
the service's records: one thread per slot takes the next job as soon as its worker is free, and finished jobs
are handed back as they end, so the caller can work on one (score it) while the workers run the next. A job
that fails is one :class:`Finished` with its error; the others go on. Leaving the loop early (Ctrl-C, an error
in the caller) cancels the running jobs at their next progress update and waits for their workers to stop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.service.executors.base import Executor, JobOutcome, JobRun

CANCEL_WAIT_S = 120.0  # how long an interrupted batch waits for its running jobs to stop


class NoWorkers(PanSt3RError):
    """No slot could start a worker, so the jobs left cannot run."""

    code = "worker_lost"


@dataclass(frozen=True)
class Finished:
    """Job ``index`` ended: ``outcome`` when done, else ``error`` (``Cancelled`` included)."""

    index: int
    outcome: JobOutcome | None = None
    error: BaseException | None = None


def run_batch(
    executor: Executor,
    count: int,
    make_job: Callable[[int], JobRun],
    progress_for: Callable[[int, threading.Event], Progress],
) -> Iterator[Finished]:
    """Run jobs ``0 .. count-1`` (each made by ``make_job`` just before it is dispatched, so inputs are prepared
    no sooner than needed); yields each as it finishes, in finishing order. ``progress_for(index, cancel)``
    gives the job's progress, whose cancel event must be ``cancel``."""
    cancel, done = threading.Event(), queue.Queue()
    lock, state = threading.Lock(), {"next": 0, "busy": set()}

    def take() -> int | None:
        with lock:
            if cancel.is_set() or state["next"] >= count:
                return None
            state["next"] += 1
            return state["next"] - 1

    def work(slot: int) -> None:
        while not cancel.is_set() and executor.prepare(slot):
            if (index := take()) is None:
                return
            with lock:
                state["busy"].add(slot)
            try:
                done.put(Finished(index, outcome=executor.run(slot, make_job(index), progress_for(index, cancel))))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller, job by job)
                done.put(Finished(index, error=exc))
            finally:
                with lock:
                    state["busy"].discard(slot)

    threads = [threading.Thread(target=work, args=(slot,), daemon=True) for slot in range(executor.slots)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(count):
            while True:
                try:
                    item = done.get(timeout=0.5)
                except queue.Empty:
                    if any(thread.is_alive() for thread in threads):
                        continue
                    try:
                        item = done.get_nowait()  # put just before its thread ended
                    except queue.Empty:  # every slot gave up (no worker could start): what is left cannot run
                        if (index := take()) is None:
                            return
                        item = Finished(index, error=NoWorkers(_no_workers(executor)))
                yield item
                break
    finally:
        cancel.set()
        deadline = time.monotonic() + CANCEL_WAIT_S
        for slot, thread in enumerate(threads):
            with lock:
                running = slot in state["busy"]
            if running:  # a slot still starting its worker is stopped by the executor's close()
                thread.join(max(0.0, deadline - time.monotonic()))


def _no_workers(executor: Executor) -> str:
    reason = getattr(executor, "start_error", None) or "the workers stopped"
    return f"no cluster worker could start ({reason}); check `ray status` and that each machine has the weights"
