"""Long tasks the panel shows progress for: engine runs, environment setup, weight downloads. No bpy.

Each :class:`Job` works in a background thread and publishes a state dict; the
UI polls :meth:`JobManager.poll` from a ``bpy.app.timers`` callback every 0.5 s
(tests call it in a loop: timers never fire in background mode). ``poll`` never
blocks. The state dict::

    {"kind": "run" | "command", "state": "starting" | "uploading" | "queued" | "running" |
     "downloading" | "done" | "failed" | "cancelled", "stage": str, "fraction": float (stage),
     "progress": float (whole job, 0..1), "message": str, "error": str | None,
     "bundle": str | None, "job_id": str | None, "title": str}

A run's ``progress`` maps the engine's (stage, fraction) through the bundle
contract's stage list (``bundle/_spec.py``), so add-on and engine agree on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle._spec import STAGES, overall_progress
from .engine import EngineClient, EngineError, kill_process_group, process_group_kwargs

TERMINAL = ("done", "failed", "cancelled")
_IDLE = {
    "kind": None,
    "title": "",
    "state": "idle",
    "stage": "",
    "fraction": 0.0,
    "progress": 0.0,
    "message": "",
    "error": None,
    "bundle": None,
    "job_id": None,
}
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


class Job:
    """A task in a background thread with a published state; subclasses implement :meth:`run`."""

    kind = "job"

    def __init__(self, title: str) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = False  # set by the UI once it has imported or reported the result
        self._state = {
            "kind": self.kind,
            "title": title,
            "state": "starting",
            "stage": "",
            "fraction": 0.0,
            "progress": 0.0,
            "message": "",
            "error": None,
            "bundle": None,
            "job_id": None,
        }

    def start(self) -> Job:
        self._thread = threading.Thread(target=self._main, name=f"panst3r-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self.run()
        except EngineError as exc:
            self._set(state="failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001  (a bug: still end the job with a sentence; traceback to the console)
            traceback.print_exc()
            self._set(state="failed", error=f"unexpected error in the PanSt3R add-on: {exc!r}")

    def run(self) -> None:
        raise NotImplementedError

    def _set(self, **values) -> None:
        with self._lock:
            self._state.update(values)

    def poll(self) -> dict:
        """A copy of the current state (never blocks)."""
        with self._lock:
            return dict(self._state)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self.poll()["state"] in TERMINAL

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the job ends (scripts and tests); returns the final state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()


class RunJob(Job):
    """Photos -> engine job -> downloaded bundle folder."""

    kind = "run"

    def __init__(
        self,
        connect: Callable[[], EngineClient],
        images: list[Path],
        options: dict,
        results_dir: Path,
        poll_interval: float = 0.5,
        title: str = "PanSt3R",
    ) -> None:
        super().__init__(title)
        self.connect, self.images, self.options = connect, [Path(p) for p in images], options
        self.results_dir, self.poll_interval = Path(results_dir), poll_interval

    def run(self) -> None:
        self._set(state="starting", message="starting the engine (the model loads once)")
        client = self.connect()
        if self._cancel.is_set():
            self._set(state="cancelled", message="cancelled before the job was sent")
            return
        self._set(state="uploading", message=f"sending {len(self.images)} photos")
        job_id = client.submit(self.images, self.options)
        self._set(job_id=job_id, state="queued", message="waiting for the engine")
        while True:
            if self._cancel.is_set():
                try:
                    client.cancel(job_id)
                finally:
                    self._set(state="cancelled", message="cancelled")
                return
            status = client.status(job_id)
            state, stage = status.get("state"), str(status.get("stage") or "")
            fraction = float(status.get("fraction") or 0.0)
            self._set(
                state=state if state in ("queued", "running") else "running",
                stage=stage,
                fraction=fraction,
                progress=self._progress(stage, fraction),
                message=str(status.get("message") or ""),
            )
            if state == "done":
                break
            if state == "failed":
                error = status.get("error")
                message = error.get("message") if isinstance(error, dict) else error
                raise EngineError(str(message or "the engine reported that the job failed"))
            if state == "cancelled":
                self._set(state="cancelled", message="the job was cancelled on the engine")
                return
            self._cancel.wait(self.poll_interval)
        self._set(state="downloading", message="downloading the result", progress=1.0)
        bundle = client.download_bundle(job_id, self.results_dir / job_id, cancel=self._cancel)
        self._set(state="done", bundle=str(bundle), message=f"result in {bundle}", fraction=1.0, progress=1.0)

    def _progress(self, stage: str, fraction: float) -> float:
        """The whole job's fraction; a stage this add-on does not know (a newer engine) keeps the last one."""
        return overall_progress(stage, fraction) if stage in STAGES else self.poll()["progress"]


@dataclass
class Step:
    """One step of a :class:`CommandJob`: a command line, or a Python callable for quick local work."""

    label: str
    argv: list[str] | None = None
    func: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


class CommandJob(Job):
    """A list of steps (venv creation, pip installs, weight downloads) with output shown as progress."""

    kind = "command"

    def __init__(self, title: str, steps: list[Step], log_path: Path) -> None:
        super().__init__(title)
        self.steps, self.log_path = steps, Path(log_path)

    def run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for index, step in enumerate(self.steps):
            if self._cancel.is_set():
                self._set(state="cancelled", message=f"cancelled before {step.label}")
                return
            self._set(
                state="running", stage=step.label, fraction=0.0, progress=index / len(self.steps), message=step.label
            )
            if step.func is not None:
                step.func()
            elif not self._run_command(step, index):
                return
        self._set(state="done", fraction=1.0, progress=1.0, message=f"{self.poll()['title']}: done")

    def _run_command(self, step: Step, index: int) -> bool:
        """Run one command, streaming its output into the log and the state; False when cancelled."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **step.env}
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(step.argv)}\n")
            log.flush()
            try:
                process = subprocess.Popen(
                    step.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    **process_group_kwargs(),
                )
            except OSError as exc:
                raise EngineError(f"{step.label} failed: cannot run {step.argv[0]} ({exc.strerror or exc})") from None
            watcher = threading.Thread(target=self._watch_cancel, args=(process,), daemon=True)
            watcher.start()
            last = ""
            for raw in process.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip()
                log.write(line + "\n")
                if line.strip():
                    last = line.strip()[:200]
                    percent = _PERCENT.findall(line)
                    fraction = min(1.0, float(percent[-1]) / 100) if percent else self.poll()["fraction"]
                    self._set(message=last, fraction=fraction, progress=(index + fraction) / len(self.steps))
            code = process.wait()
        if self._cancel.is_set():
            self._set(state="cancelled", message=f"cancelled during {step.label}")
            return False
        if code != 0:
            raise EngineError(f"{step.label} failed (exit code {code}): {last}; see the log at {self.log_path}")
        return True

    def _watch_cancel(self, process: subprocess.Popen) -> None:
        while process.poll() is None:
            if self._cancel.wait(0.2):
                kill_process_group(process)
                return


class JobManager:
    """The one job the panel shows; a plain object, polled by the UI timer (or a test loop)."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.started_at = 0.0

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self, job: Job) -> Job:
        """Start job; refuses while another one runs."""
        if self.busy:
            raise EngineError("a PanSt3R task is already running; wait for it to finish or cancel it")
        self.job, self.started_at = job, time.monotonic()
        return job.start()

    def poll(self) -> dict:
        """The current job's state (``state == 'idle'`` when there is none); never blocks."""
        if self.job is None:
            return dict(_IDLE)
        state = self.job.poll()
        state["elapsed"] = time.monotonic() - self.started_at
        return state

    def cancel(self) -> bool:
        """Ask the running job to stop; False when nothing runs."""
        if not self.busy:
            return False
        self.job.cancel()
        return True

    def clear(self) -> None:
        """Forget a finished job (the panel then shows idle)."""
        if not self.busy:
            self.job = None
