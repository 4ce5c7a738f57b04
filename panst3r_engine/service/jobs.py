"""The job queue: many clients submit, worker threads run the jobs (one per executor slot).

Requests never wait for a job. They change job records under one lock; a
worker thread takes the next queued job and hands it to the executor (in this
process by default, or a Ray cluster: :mod:`panst3r_engine.service.executors`)
with a :class:`JobProgress` that copies stage/fraction/message into the record,
and cancellation is the progress reporter raising ``Cancelled`` at the next
update. A job that does not end ``done`` leaves no bundle behind.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from panst3r_engine.model.loading import ModelCache
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Cancelled, Progress
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.executors.base import Executor, JobRun
from panst3r_engine.service.failures import describe_failure
from panst3r_engine.service.options import ClientOptions, vocab_file_text
from panst3r_engine.service.records import (
    ID_PATTERN,
    MARKER,
    RECORD,
    Job,
    is_orphan,
    load_records,
    make_job_folder,
    new_job_id,
    save_record,
    write_private,
)

log = logging.getLogger(__name__)
VOCAB_FILE = "vocab.txt"


class JobProgress(Progress):
    """Copies each update into the job record, where status requests read it."""

    def __init__(self, job: Job, lock: threading.RLock) -> None:
        super().__init__(cancel_event=job.cancel_event)
        self._job, self._lock = job, lock

    def show(self) -> None:
        with self._lock:
            self._job.stage, self._job.fraction, self._job.message = self.stage, self.fraction, self.message


class WorkerTask:
    """A short piece of device work (a render) run by the job worker between jobs; a request waits for it."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn, self.done = fn, threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001  (handed to the waiting request)
            self.error = exc
        finally:
            self.done.set()


class JobManager:
    """Job records, the queue and the worker; every public method is safe to call from any thread."""

    def __init__(
        self,
        jobs_dir: str | Path,
        base: JobOptions,
        models: ModelCache | None = None,
        keep_jobs: int = 20,
        job_ttl_hours: float = 24.0,
        preload: bool = False,
        executor: Executor | None = None,
    ) -> None:
        from panst3r_engine.service.executors.local import LocalExecutor

        self.jobs_dir, self.base = Path(jobs_dir), base
        self.executor = executor or LocalExecutor(base, models or ModelCache(), preload=preload)
        self.keep_jobs, self.job_ttl_s = keep_jobs, job_ttl_hours * 3600.0
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {job.id: job for job in load_records(self.jobs_dir)}
        self._pending: list[Job] = []
        self._tasks: list[WorkerTask] = []  # renders: before the next queued job, one at a time
        self._running: list[Job] = []
        self._accepting, self._stopping = True, False
        slots = self.executor.slots
        self._threads = [
            threading.Thread(target=self._work, args=(slot,), name=_thread_name(slot, slots), daemon=True)
            for slot in range(slots)
        ]

    def start(self) -> JobManager:
        """Tidy what an earlier engine left (expired jobs, uploads, half-written bundles, job folders a crash
        left without a record), then work."""
        self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cleanup()
        self._remove_orphans()
        with self._lock:
            left = list(self._jobs.values())
        for job in left:
            self._remove_bundle(job, keep_done=True)
            self._remove_files(job)
        for thread in self._threads:
            thread.start()
        return self

    # ------------------------------------------------------------ queries
    def view(self, job_id: str) -> dict:
        with self._lock:
            job = self._get(job_id)
            return job.public(self._position(job))

    def list_jobs(self) -> list[dict]:
        with self._lock:
            return [job.public(self._position(job)) for job in sorted(self._jobs.values(), key=lambda j: j.created)]

    def health(self) -> dict:
        with self._lock:
            model_id = self.executor.model_id()
            return {
                "model_loaded": model_id is not None,
                "model": model_id,
                "queue_length": len(self._pending),
                "running": self._running[0].id if self._running else None,
                "executor": self.executor.kind,
                "workers": self.executor.slots,
                "busy_workers": len(self._running),
            }

    def finished_job(self, job_id: str) -> Job:
        """A job that is ``done`` (its bundle can be read), else 409."""
        with self._lock:
            job = self._get(job_id)
            if job.state != "done":
                raise ApiError(409, "not_done", f"job {job_id} is {job.state}; its bundle exists only once it is done")
            return job

    def stop_accepting(self) -> None:
        """From now on, submissions get 503 (the first step of a shutdown)."""
        with self._lock:
            self._accepting = False

    # ------------------------------------------------------------ commands
    def check_accepting(self) -> None:
        """503 once a shutdown has begun."""
        if not self._accepting:
            raise ApiError(503, "shutting_down", "the engine is shutting down and takes no new jobs; start it again")

    def submit(self, save: Callable[[Path], list[Path]], options: ClientOptions) -> dict:
        """Create a job folder, let ``save`` write the photos into ``input/``, and queue the job."""
        self.check_accepting()
        self.cleanup()
        job_id = new_job_id()
        self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = make_job_folder(self.jobs_dir, job_id)
        try:
            photos = save(folder / "input")
            if options.vocab_names:
                write_private(folder / VOCAB_FILE, vocab_file_text(options.vocab_names).encode("utf-8"))
            job = Job(job_id, folder, options, [p.name for p in photos], created=time.time())
            with self._lock:
                self.check_accepting()
                self._jobs[job_id] = job
                self._pending.append(job)
                save_record(job)
                if (folder / RECORD).is_file():  # the record now says the folder is ours
                    (folder / MARKER).unlink(missing_ok=True)
                self._wake.notify_all()
                return job.public(self._position(job))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def run_on_worker(self, fn: Callable[[], object], wait_s: float, gone: Callable[[], bool] | None = None) -> object:
        """Run ``fn`` on the worker (so device work never overlaps a job or another render) and return its result.

        A task still queued after ``wait_s`` s is dropped (503 busy), and so is one whose client went away
        (``gone()``); one already running cannot be interrupted, its result is then dropped.
        """
        task = WorkerTask(fn)
        with self._lock:
            self.check_accepting()
            self._tasks.append(task)
            self._wake.notify_all()
        deadline = time.monotonic() + wait_s
        while not task.done.wait(0.2):
            left = bool(gone and gone())
            with self._lock:
                queued = task in self._tasks
                if queued and (left or time.monotonic() > deadline):
                    self._tasks.remove(task)
            if left:
                log.info("render dropped: the client went away")
                raise ApiError(503, "client_gone", "the client closed the connection; the render was dropped")
            if queued and time.monotonic() > deadline:
                raise ApiError(
                    503,
                    "busy",
                    f"the engine is busy with a job and could not render within {wait_s:.0f} "
                    "s; try again when the job is done",
                )
        if task.error is not None:
            raise task.error
        return task.result

    def cancel(self, job_id: str, purge: bool = False) -> tuple[int, dict]:
        """Cancel a queued (at once) or running (at its next progress update) job; purge a finished one."""
        with self._lock:
            job = self._get(job_id)
            if job.state == "running":
                job.cancel_event.set()
                job.purge_when_finished |= purge
                job.message = "cancelling"
                return 202, job.public()
            if job.state == "queued":
                self._pending.remove(job)
                self._mark_finished(job, "cancelled", message="cancelled before it started")
            elif not purge:
                raise ApiError(
                    409,
                    "already_finished",
                    f"job {job_id} has already finished ({job.state}); add ?purge=1 to delete it and its files",
                )
            if purge:
                del self._jobs[job_id]
            body = {"id": job_id, "state": job.state, "purged": True} if purge else job.public()
        self._remove_files(job, everything=purge)
        return 200, body

    def cleanup(self) -> None:
        """Delete finished jobs older than the TTL, and all but the newest ``keep_jobs`` finished ones."""
        now = time.time()
        with self._lock:
            finished = sorted(
                (j for j in self._jobs.values() if j.is_finished), key=lambda j: j.finished or j.created, reverse=True
            )
            old = [
                j
                for i, j in enumerate(finished)
                if i >= self.keep_jobs or now - (j.finished or j.created) > self.job_ttl_s
            ]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            log.info("removing old job %s", job.id)
            self._remove_files(job, everything=True)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Refuse new jobs, cancel queued ones at once and the running one at its next update."""
        with self._lock:
            self._accepting, self._stopping = False, True
            pending, self._pending = self._pending, []
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.error = ApiError(503, "shutting_down", "the engine is shutting down; start it again")
                task.done.set()
            for job in pending:
                self._mark_finished(job, "cancelled", message="cancelled: the engine shut down")
            running = list(self._running)
            for job in running:
                job.cancel_event.set()
                job.message = "cancelling: the engine is shutting down"
            self._wake.notify_all()
        for job in pending:
            self._remove_files(job)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        for job in running:
            if not job.is_finished:  # stuck in one long step: record it anyway
                with self._lock:
                    self._mark_finished(job, "cancelled", message="cancelled: the engine shut down")
        self.executor.close()

    # ------------------------------------------------------------ worker
    def _work(self, slot: int) -> None:
        while not self._stopping and self.executor.prepare(slot) and (item := self._next()) is not None:
            if isinstance(item, WorkerTask):
                item.run()
                continue
            try:
                self._run(slot, item)
            finally:
                with self._lock:
                    if item in self._running:
                        self._running.remove(item)

    def _next(self) -> Job | WorkerTask | None:
        with self._lock:
            while not self._pending and not self._tasks and not self._stopping:
                self._wake.wait()
            if self._stopping:
                return None
            if self._tasks:
                return self._tasks.pop(0)
            job = self._pending.pop(0)
            job.state, job.started, job.message = "running", time.time(), "starting"
            self._running.append(job)
            save_record(job)
            return job

    def _run(self, slot: int, job: Job) -> None:
        progress = JobProgress(job, self._lock)
        log.info("job %s: %d photos", job.id, len(job.photos))
        vocab = job.folder / VOCAB_FILE if job.client.vocab_names else None
        photos = [job.input_dir / name for name in job.photos]
        run = JobRun(job.id, photos, job.bundle_dir, self._job_options(job), vocab)
        try:
            outcome = self.executor.run(slot, run, progress)
        except Cancelled:
            self._end(job, "cancelled", message="cancelled")
        except Exception as exc:  # noqa: BLE001  (any failure ends the job, never the worker)
            error = describe_failure(exc)
            if error["code"] == "internal":
                log.error("job %s failed unexpectedly", job.id, exc_info=exc)
            self._end(job, "failed", message=error["message"], error=error)
        else:
            self._end(
                job,
                "done",
                message=f"{outcome.segments} segments",
                segments=outcome.segments,
                has_splats=(job.bundle_dir / "splats.ply").is_file(),
            )

    def _job_options(self, job: Job) -> JobOptions:
        vocab = job.folder / VOCAB_FILE
        return job.client.job_options(self.base, str(vocab) if job.client.vocab_names else None)

    def _end(self, job: Job, state: str, **fields) -> None:
        if state != "done":
            self._remove_bundle(job)
        with self._lock:
            self._mark_finished(job, state, **fields)
            if job in self._running:
                self._running.remove(job)
            purge = job.purge_when_finished
            log.info(
                "job %s %s after %.1f s: %s", job.id, state, job.finished - (job.started or job.created), job.message
            )
            if purge:
                self._jobs.pop(job.id, None)
        self._remove_files(job, everything=purge)
        _free_device_memory()

    # ------------------------------------------------------------ helpers (call with the lock held)
    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(
                404,
                "unknown_job",
                f"there is no job {job_id!r} on this engine (it may have been "
                "deleted after --job-ttl-hours or beyond --keep-jobs)",
            )
        return job

    def _position(self, job: Job) -> int | None:
        """How many jobs are ahead of this queued one (running jobs included)."""
        if job.state != "queued" or job not in self._pending:
            return None
        return self._pending.index(job) + len(self._running)

    def _mark_finished(self, job: Job, state: str, **fields) -> None:
        for name, value in fields.items():
            setattr(job, name, value)
        job.state, job.finished = state, time.time()
        save_record(job)

    # ------------------------------------------------------------ files (no lock needed)
    def _remove_orphans(self) -> None:
        """Job folders this service made (they hold its marker) that have no record: a crash while the photos
        were being saved. Folders without the marker are someone else's and stay."""
        with self._lock:
            known = set(self._jobs)
        for folder in sorted(self.jobs_dir.iterdir()):
            if is_orphan(folder, known):
                log.info("removing job folder %s: left without a record by an earlier engine", folder.name)
                shutil.rmtree(folder, ignore_errors=True)

    def _remove_bundle(self, job: Job, keep_done: bool = False) -> None:
        """The bundle of a job that did not end done, and any interrupted atomic write."""
        if not (keep_done and job.state == "done"):
            shutil.rmtree(job.bundle_dir, ignore_errors=True)
        for tmp in job.folder.glob(f".{job.bundle_dir.name}.*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _remove_files(self, job: Job, everything: bool = False) -> None:
        """The uploads once a job has ended (the bundle keeps its own copies); the folder on purge."""
        if job.folder.parent == self.jobs_dir and ID_PATTERN.match(job.folder.name):  # never outside our folders
            shutil.rmtree(job.folder if everything else job.input_dir, ignore_errors=True)


def _thread_name(slot: int, slots: int) -> str:
    return "panst3r-worker" if slots == 1 else f"panst3r-worker-{slot}"


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
