"""Jobs on a Ray cluster: one warm worker actor per GPU (or ``cpu_workers`` CPU actors), one job each at a time.

The front end keeps everything the API shows (records, queue, cancel, bundles); a slot owns one actor. A job's
uploads travel to the actor as bytes through Ray's object store and its bundle comes back as a zip, so the
machines share no file system. Progress is the actor's last update, polled every ``POLL_S``; a cancel is a call
to the actor, which stops the pipeline at its next progress update. An actor that dies mid-job (its process or
machine went away) fails that job with ``worker_lost`` (no retry: a job that killed its worker, for example by
running out of memory, would take down a second one); the slot then starts a fresh actor before its next job.
Everything a job does runs on its actor, splat fitting included (a stage of the pipeline), so the front end
never needs a GPU. ``eval run --cluster`` uses the same executor through :mod:`.batch`.

Ray has no authentication: its ports must stay on a private network (see the README).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from panst3r_engine.errors import Cancelled, PanSt3RError
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.service.executors.base import JobOutcome, JobRun
from panst3r_engine.service.executors.transfer import read_files, unpack_bundle

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'panst3r-engine[cluster]'"
POLL_S = 0.25  # progress poll interval of a running job
READY_TIMEOUT_S = 600.0  # a new actor's start (and model load) before the slot tries again


class ClusterError(PanSt3RError):
    """The cluster cannot be used as asked."""

    code = "bad_options"


class WorkerLost(PanSt3RError):
    """The actor running a job stopped before it answered."""

    code = "worker_lost"


class RemoteJobError(PanSt3RError):
    """A job that failed on a worker, with the worker's code and sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def import_ray():
    """Ray, or one sentence on how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--cluster needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def connect(ray, address: str) -> bool:
    """Start or attach Ray for ``--cluster`` (``ray``: a local Ray, ``auto``: the running cluster of this
    machine, ``ray://HOST:PORT``: a Ray Client address); True when this call started it (and so stops it)."""
    if address == "ray":
        target = None
    elif address == "auto" or address.startswith("ray://"):
        target = address
    else:
        raise ClusterError(f"--cluster {address[:80]!r} is not ray, auto or ray://HOST:PORT")
    if ray.is_initialized():  # this process already joined a cluster (tests, an embedding application)
        return False
    try:
        ray.init(
            address=target,
            runtime_env=engine_runtime_env(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({exc}); check `ray status` there") from None
    return True


@dataclass(frozen=True)
class WorkerPlan:
    """The actors to start: how many, what each asks Ray for (``ray.remote`` options), where its model goes."""

    slots: int
    resources: dict
    device: str


def plan_workers(cluster_resources: dict, cpu_workers: int = 0) -> WorkerPlan:
    """One actor per GPU of the cluster (``num_gpus=1``: Ray gives each its own GPU), or ``cpu_workers``
    CPU actors when asked; a cluster without GPUs needs the latter."""
    if cpu_workers < 0:
        raise ClusterError("--cluster-cpu-workers must be 0 (one worker per GPU) or more")
    if cpu_workers:
        return WorkerPlan(cpu_workers, {"num_cpus": 1}, "cpu")
    gpus = int(cluster_resources.get("GPU", 0))
    if not gpus:
        raise ClusterError(
            "the Ray cluster has no GPUs; join GPU machines with `ray start --address HEAD:6379`, "
            "or use --cluster-cpu-workers N to run on CPUs"
        )
    return WorkerPlan(gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda")


def worker_device(requested: str) -> tuple[str, str | None]:
    """The device an actor really uses, and a warning when it differs from the plan.

    Ray hides all but the actor's own GPU (``CUDA_VISIBLE_DEVICES``), so ``cuda`` is that GPU. A GPU that
    Ray counts but this process's torch cannot use (a CPU-only torch, no driver, or ``ray start --num-gpus``
    on a machine without one) would fail every job; the worker runs on the CPU instead and says why.
    """
    if requested != "cuda":
        return requested, None
    import torch

    if torch.cuda.is_available():
        return "cuda", None
    return "cpu", (
        "Ray gave this worker a GPU but its PyTorch sees no CUDA device, so it runs on the CPU; "
        "install a CUDA build of torch on that machine (python -c 'import torch; print(torch.cuda.is_available())')"
    )


def engine_runtime_env() -> dict:
    """Ray ships this process's engine package to every worker (``py_modules``), so the workers run exactly
    the front end's code; only the engine's dependencies (torch, ...) must be installed on the workers."""
    import panst3r_engine

    return {"py_modules": [str(Path(panst3r_engine.__file__).parent)], "excludes": ["__pycache__"]}


class ClusterWorker:
    """The actor: a warm model on one device; ``run`` in one thread, ``status``/``cancel`` from others."""

    def __init__(self, weights: str, device: str, max_pixels: int, video_limits) -> None:
        from panst3r_engine.model.loading import ModelCache
        from panst3r_engine.pipeline.images import set_max_pixels
        from panst3r_engine.pipeline.video import set_video_limits

        set_max_pixels(max_pixels)
        set_video_limits(video_limits)
        self.device, self.warning = worker_device(device)
        if self.warning:
            log.warning("%s", self.warning)
        self.weights, self.models = weights, ModelCache()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()  # job ids; a cancel may arrive before its run starts
        self._progress = Progress(cancel_event=threading.Event())
        self._job: str | None = None

    def ready(self) -> str:
        """Load the model (the worker is warm from here on); returns its id."""
        return self.models.get(self.weights, self.device, None).model_id

    def info(self) -> dict:
        """Where this worker runs: its device, the GPUs Ray gave it, and a warning when they disagree."""
        import ray

        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        return {"device": self.device, "gpus": list(gpus), "warning": self.warning}

    def status(self) -> tuple[str | None, float, str]:
        return self._progress.stage, self._progress.fraction, self._progress.message

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            if self._job == job_id:
                self._progress.cancel_event.set()

    def run(
        self,
        job_id: str,
        files: list[tuple[str, bytes]],
        options: JobOptions,
        vocab: bytes | None,
        embeddings: bytes | None = None,
    ) -> dict:
        """The job in a private temporary folder (``vocab``/``embeddings``: the files the options name there):
        ``{"state": "done", "bundle", "segments", "model_id"}``,
        ``{"state": "cancelled"}`` or ``{"state": "failed", "error": {"code", "message"}}``."""
        from panst3r_engine.pipeline.run import run_job
        from panst3r_engine.service.errors import scrub
        from panst3r_engine.service.executors.transfer import pack_bundle, write_files
        from panst3r_engine.service.failures import describe_failure

        with self._lock:
            self._job, self._progress = job_id, Progress(cancel_event=threading.Event())
            if job_id in self._cancelled:
                self._progress.cancel_event.set()
        work = Path(tempfile.mkdtemp(prefix="panst3r-job-"))
        try:
            photos = write_files(files, work / "input")
            if vocab is not None:
                (work / "vocab.txt").write_bytes(vocab)
                options = dataclasses.replace(options, vocab=str(work / "vocab.txt"))
            if embeddings is not None:
                (work / "embeddings.npz").write_bytes(embeddings)
                options = dataclasses.replace(options, vocab_embeddings=str(work / "embeddings.npz"))
            options = dataclasses.replace(options, weights=self.weights, device=self.device)
            result = run_job(photos, work / "bundle", options, self._progress, self.models)
            self._progress.check_cancelled()
            return {
                "state": "done",
                "bundle": pack_bundle(work / "bundle"),
                "segments": len(result.manifest["segments"]),
                "model_id": self.ready(),
            }
        except Cancelled:
            return {"state": "cancelled"}
        except Exception as exc:  # noqa: BLE001  (every failure goes back to the front end as a sentence)
            error = describe_failure(exc)
            if error["code"] == "internal":
                log.error("job failed unexpectedly", exc_info=exc)
            return {"state": "failed", "error": {**error, "message": scrub(error["message"], work)}}
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with self._lock:
                self._job = None
                self._cancelled.discard(job_id)


class RayExecutor:
    """Slots backed by Ray actors; the front end needs no GPU and no shared disk with the workers."""

    kind = "ray"

    def __init__(
        self,
        address: str,
        base: JobOptions,
        *,
        cpu_workers: int = 0,
        max_pixels: int = 100_000_000,
        video_limits=None,
        start_attempts: int | None = None,
    ) -> None:
        """``start_attempts``: how often a slot tries to start its actor before giving up (None: until closed,
        as a service does; a batch gives up and reports ``start_error``)."""
        from panst3r_engine.pipeline.video import video_limits as current_video_limits

        self._actors: list = []
        self._closing = threading.Event()
        self.ray = ray = import_ray()
        self.base, self._owns_ray = base, connect(ray, address)
        try:
            self.plan = plan_workers(ray.cluster_resources(), cpu_workers)
        except ClusterError:
            self.close()
            raise
        self.slots = self.plan.slots
        self._actor_class = ray.remote(max_concurrency=4, **self.plan.resources)(ClusterWorker)
        self._args = (base.weights, self.plan.device, max_pixels, video_limits or current_video_limits())
        self._actors = [None] * self.slots
        self.workers: list[dict | None] = [None] * self.slots  # each ready actor's ``info()``
        self._model_id: str | None = None
        self._start_attempts, self.start_error = start_attempts, None
        log.info("Ray cluster: %d %s worker(s)", self.slots, "GPU" if self.plan.resources.get("num_gpus") else "CPU")

    def prepare(self, slot: int) -> bool:
        """Start the slot's actor if it has none (at start, or after its actor died) and wait until it is warm."""
        attempts = 0
        while not self._closing.is_set():
            if self._actors[slot] is not None:
                return True
            if self._start_attempts is not None and attempts >= self._start_attempts:
                return False
            attempts += 1
            actor = self._actor_class.remote(*self._args)
            try:
                self._model_id = self._get(actor.ready.remote(), READY_TIMEOUT_S)
                self.workers[slot] = info = self._get(actor.info.remote(), 60.0)
                self._actors[slot] = actor
                log.info("cluster worker %d is ready on %s", slot, info["device"])
                if info["warning"]:
                    log.warning("cluster worker %d: %s", slot, info["warning"])
            except Exception as exc:  # noqa: BLE001  (a worker that cannot start is retried; others serve)
                self.start_error = _reason(exc)
                log.error("cluster worker %d cannot start: %s", slot, self.start_error)
                self.ray.kill(actor)
                if self._start_attempts is None or attempts < self._start_attempts:
                    self._closing.wait(10.0)
        return False

    def run(self, slot: int, job: JobRun, progress: Progress) -> JobOutcome:
        ray, actor = self.ray, self._live_actor(slot)
        vocab = job.vocab_file.read_bytes() if job.vocab_file else None
        embeddings = job.embeddings_file.read_bytes() if job.embeddings_file else None
        ref = actor.run.remote(job.id, read_files(job.photos), job.options, vocab, embeddings)
        told = False
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                if progress.cancel_event is not None and progress.cancel_event.is_set() and not told:
                    actor.cancel.remote(job.id)
                    told = True
                stage, fraction, message = self._get(actor.status.remote(), 60.0)
                if stage is not None and not told:
                    try:
                        progress.update(stage, fraction, message)
                    except Cancelled:
                        continue  # told at the next turn
            result = self._get(ref, 60.0)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            self._actors[slot] = None  # the slot starts a new actor before its next job
            ray.kill(actor)
            raise WorkerLost(
                f"the cluster worker running this job stopped ({_reason(exc)}); submit the photos again"
            ) from None
        if result["state"] == "cancelled":
            raise Cancelled("the job was cancelled")
        if result["state"] == "failed":
            raise RemoteJobError(result["error"]["code"], result["error"]["message"])
        unpack_bundle(result["bundle"], job.bundle_dir)
        self._model_id = result["model_id"]
        return JobOutcome(int(result["segments"]), self._model_id)

    def model_id(self) -> str | None:
        return self._model_id

    def _live_actor(self, slot: int):
        """The slot's actor, replaced first if it died while the slot was idle (the job has not started)."""
        try:
            self._get(self._actors[slot].ready.remote(), 60.0)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError) as exc:
            log.warning("cluster worker %d was lost while idle (%s); starting a new one", slot, _reason(exc))
            self.ray.kill(self._actors[slot])
            self._actors[slot] = None
            if not self.prepare(slot):
                raise WorkerLost("the engine is shutting down; submit the photos again") from None
        return self._actors[slot]

    def actor(self, slot: int):
        """The slot's actor (tests kill it to check what a lost worker does)."""
        return self._actors[slot]

    def close(self) -> None:
        self._closing.set()
        for actor in self._actors:
            if actor is not None:
                self.ray.kill(actor)
        if self._owns_ray:
            self.ray.shutdown()

    def _get(self, ref, timeout: float):
        return self.ray.get(ref, timeout=timeout)


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error, without its traceback."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
