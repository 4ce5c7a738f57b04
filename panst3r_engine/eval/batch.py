"""``eval run`` over several scenes: one after another in this process, or at the same time on Ray workers.

With ``--cluster`` each scene's job runs on a warm worker of :class:`~panst3r_engine.service.executors.
ray_cluster.RayExecutor` (the executor of ``serve --cluster``, driven by :func:`~panst3r_engine.service.
executors.batch.run_batch`): the photos travel to the worker, the bundle comes back and is scored here with the
same code as a sequential run (:func:`~panst3r_engine.eval.run.score_bundle`), so both give the same report.
A scene that fails is reported with its error and the others go on.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from panst3r_engine.errors import OptionsError, PanSt3RError
from panst3r_engine.eval.run import EvalOptions, load_eval_scene, run_evaluation, score_bundle, write_job_inputs
from panst3r_engine.pipeline.progress import Progress

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("pq", "pq_th", "pq_st", "sq", "rq", "miou", "pq_image_wise")


@dataclass(frozen=True)
class ClusterOptions:
    """``--cluster`` (``ray``, ``auto`` or ``ray://HOST:PORT``) and ``--cluster-cpu-workers``."""

    address: str
    cpu_workers: int = 0


@dataclass
class SceneResult:
    """One scene of the evaluation: its report, or the error that stopped it."""

    dataset: Path
    report: dict | None = None
    error: BaseException | None = None

    def entry(self) -> dict:
        """What the combined report lists for this scene."""
        if self.report is not None:
            return {"state": "done", **self.report}
        return {"dataset": str(self.dataset), "state": "failed", "error": describe(self.error)}


def describe(exc: BaseException) -> dict:
    """``{"code", "message"}`` of a scene's failure (the engine's own sentence when it has one)."""
    if isinstance(exc, PanSt3RError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}


def scene_out_dirs(datasets: list[Path], out: Path) -> list[Path]:
    """Where each scene's bundle goes: ``out`` for one scene (as before), ``out/<scene folder name>`` for several."""
    if len(datasets) == 1:
        return [out]
    names = [d.resolve().name for d in datasets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OptionsError(f"scene folders share the name {twice[0]!r}; their bundles would mix in {out / twice[0]}")
    return [out / name for name in names]


def evaluate_scenes(
    datasets: list[Path],
    out_dirs: list[Path],
    opts: EvalOptions,
    cluster: ClusterOptions | None = None,
    progress_for: Callable[[int], Progress] | None = None,
) -> list[SceneResult]:
    """Every scene's result, in the order given; Ctrl-C stops the running jobs and propagates."""
    opts = opts.validate()
    progress_for = progress_for or (lambda index: Progress())
    if cluster is None:
        return [_in_turn(d, out, opts, progress_for(i)) for i, (d, out) in enumerate(zip(datasets, out_dirs))]
    return _on_cluster(datasets, out_dirs, opts, cluster, progress_for)


def _in_turn(dataset: Path, out: Path, opts: EvalOptions, progress: Progress) -> SceneResult:
    try:
        return SceneResult(dataset, report=run_evaluation(dataset, out, opts, progress))
    except Exception as exc:  # noqa: BLE001  (reported with the scene; the next one runs)
        _log_failure(dataset, exc)
        return SceneResult(dataset, error=exc)


def _on_cluster(
    datasets: list[Path],
    out_dirs: list[Path],
    opts: EvalOptions,
    cluster: ClusterOptions,
    progress_for: Callable[[int], Progress],
) -> list[SceneResult]:
    from panst3r_engine.bundle.write import publish_bundle, staging_path
    from panst3r_engine.pipeline.options import JobOptions
    from panst3r_engine.service.executors.base import JobRun
    from panst3r_engine.service.executors.batch import run_batch
    from panst3r_engine.service.executors.ray_cluster import RayExecutor

    embeddings = _embeddings_file(opts.vocab_embeddings)
    results = [SceneResult(d) for d in datasets]
    started: dict[int, tuple] = {}  # index -> (EvalScene, start time, staging folder)
    made: dict[int, list[Path]] = {}  # index -> the folders made for its bundle (removed again if it fails)
    lock = threading.Lock()
    executor = RayExecutor(
        cluster.address,
        JobOptions(weights=opts.weights, device=opts.device),
        cpu_workers=cluster.cpu_workers,
        start_attempts=2,
    )
    with tempfile.TemporaryDirectory(prefix="panst3r-eval-") as tmp:

        def make_job(index: int) -> JobRun:
            begun, ev = time.perf_counter(), load_eval_scene(datasets[index], opts)
            folder = Path(tmp) / str(index)
            folder.mkdir()
            photos, vocab, job = write_job_inputs(ev, folder, opts)
            staging = staging_path(out_dirs[index] / "bundle")
            with lock:
                made[index] = _make_folders(out_dirs[index])  # the worker's bundle is unpacked beside it
                started[index] = (ev, begun, staging)
            return JobRun(f"eval-{index}", photos, staging, job, vocab, embeddings)

        def progress(index: int, cancel: threading.Event) -> Progress:
            shown = progress_for(index)
            shown.cancel_event = cancel
            return shown

        batch = run_batch(executor, len(datasets), make_job, progress)
        try:
            for finished in batch:
                index = finished.index
                shutil.rmtree(Path(tmp) / str(index), ignore_errors=True)
                ev, begun, staging = started.get(index, (None, 0.0, None))
                try:
                    if finished.error is not None:
                        raise finished.error
                    bundle = publish_bundle(staging, out_dirs[index] / "bundle", overwrite=opts.overwrite)
                    timings = _job_timings(bundle)
                    results[index].report = score_bundle(ev, bundle, opts, timings, begun)
                except Exception as exc:  # noqa: BLE001  (reported with the scene; the others go on)
                    _log_failure(datasets[index], exc)
                    results[index].error = exc
                    _remove_empty(made.get(index, []))
                finally:
                    if staging is not None:  # made here (a unique hidden name); gone once published
                        shutil.rmtree(staging, ignore_errors=True)
        finally:
            batch.close()  # an early exit (Ctrl-C) cancels the running jobs and waits for them
            executor.close()
            for index, (_, _, staging) in started.items():
                shutil.rmtree(staging, ignore_errors=True)
                if results[index].report is None:
                    _remove_empty(made.get(index, []))
    return results


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; returns those made, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run made, deepest first, as long as they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _embeddings_file(value: str | None) -> Path | None:
    """A ``--vocab-embeddings`` file travels to the workers with each job (they may not share this disk)."""
    if value in (None, "random"):
        return None
    path = Path(value)
    if not path.is_file():
        raise OptionsError(f"--vocab-embeddings {value} is not a file; give an .npz of class embeddings or 'random'")
    return path


def _job_timings(bundle: Path) -> dict:
    """The job's stage timings, from the worker's manifest (the same numbers a sequential run reports)."""
    import json

    timings = json.loads((bundle / "manifest.json").read_text("utf-8")).get("timings", {})
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}


def _log_failure(dataset: Path, exc: BaseException) -> None:
    if isinstance(exc, PanSt3RError):
        log.error("%s: %s", dataset, exc.message)
    else:
        log.error("%s failed unexpectedly", dataset, exc_info=exc)


def combined_report(results: list[SceneResult]) -> dict:
    """The report of a multi-scene run: every scene in the order given, and the mean of the headline numbers
    over the scenes that finished (a scene whose value is null, e.g. PQ with no class left, is left out)."""
    done = [r.report for r in results if r.report is not None]
    mean = {}
    for key in SUMMARY_KEYS:
        values = [p[key] for p in (d["panoptic"] for d in done) if isinstance(p.get(key), (int, float))]
        values = [v for v in values if v == v]  # NaN is no number
        mean[key] = sum(values) / len(values) if values else None
    return {
        "scenes": [r.entry() for r in results],
        "mean": mean,
        "done": len(done),
        "failed": len(results) - len(done),
    }
