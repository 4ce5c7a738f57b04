"""The default executor: one job at a time in this process, on this machine's device, with a warm model."""

from __future__ import annotations

import logging

from panst3r_engine.model.loading import ModelCache
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.pipeline.run import run_job
from panst3r_engine.service.executors.base import JobOutcome, JobRun

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs :func:`run_job` directly; the model stays loaded in ``models`` between jobs."""

    kind, slots = "local", 1

    def __init__(self, base: JobOptions, models: ModelCache | None = None, preload: bool = False) -> None:
        self.base, self.models, self._preload = base, models or ModelCache(), preload
        self._model_id: str | None = None

    def prepare(self, slot: int) -> bool:
        if self._preload:
            self._preload = False
            try:
                self._load()
            except Exception as exc:  # noqa: BLE001  (jobs will report it; keep serving)
                log.error("cannot preload the model: %s", exc)
        return True

    def run(self, slot: int, job: JobRun, progress: Progress) -> JobOutcome:
        result = run_job(job.photos, job.bundle_dir, job.options, progress, self.models)
        self._load()  # cached by now: records the model's id (stages stay in the spec's order)
        progress.check_cancelled()
        return JobOutcome(len(result.manifest["segments"]), self._model_id)

    def model_id(self) -> str | None:
        return self._model_id

    def close(self) -> None:
        pass

    def _load(self) -> None:
        self._model_id = self.models.get(self.base.weights, self.base.device, None).model_id
