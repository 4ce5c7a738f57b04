"""Progress reporting shared by the CLI, the service and the pipeline.

A job is a fixed list of named stages; each reports a fraction in [0, 1].
Reporters may raise :class:`Cancelled` from ``update`` to stop the job at the
next checkpoint inside a stage.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from panst3r_engine.bundle.spec import STAGES
from panst3r_engine.errors import Cancelled

__all__ = ["STAGES", "Cancelled", "JsonProgress", "Progress", "ProgressFn", "TextProgress"]


class Progress:
    """Base reporter: records stage timings; subclasses display.

    ``cancel_event`` (a :class:`threading.Event`) is checked on every update.
    """

    def __init__(self, cancel_event: threading.Event | None = None) -> None:
        self.cancel_event = cancel_event
        self.timings: dict[str, float] = {}
        self.stage: str | None = None
        self.fraction = 0.0
        self.message = ""
        self._started: dict[str, float] = {}
        self._last_time: float | None = None

    def check_cancelled(self) -> None:
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise Cancelled("the job was cancelled")

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        now = time.perf_counter()
        if stage != self.stage:  # a stage starts where the previous one ended
            self._started.setdefault(stage, self._last_time if self._last_time is not None else now)
        self._last_time = now
        self.stage, self.fraction, self.message = stage, max(0.0, min(1.0, fraction)), message
        self.timings[stage] = now - self._started[stage]
        self.show()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.update(stage, fraction, message)

    def show(self) -> None:
        """Display the current state (no-op here)."""


class TextProgress(Progress):
    """One bar per stage on a terminal, redrawn at most ``rate`` times a second."""

    def __init__(self, stream: TextIO | None = None, rate: float = 8.0, **kw) -> None:
        super().__init__(**kw)
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self._last, self._shown_stage = 1.0 / rate, 0.0, None

    def show(self) -> None:
        now = time.perf_counter()
        done = self.fraction >= 1.0
        if not done and now - self._last < self.interval and self.stage == self._shown_stage:
            return
        self._last, self._shown_stage = now, self.stage
        filled = int(self.fraction * 24)
        line = f"\r{self.stage:<17} [{'#' * filled}{'.' * (24 - filled)}] {self.fraction * 100:5.1f}% {self.message[:40]}"
        end = "\n" if done else ""
        if self.stream.isatty() or done:
            self.stream.write(line + end)
            self.stream.flush()


class JsonProgress(Progress):
    """One JSON object per line: ``{"stage", "fraction", "message", "elapsed"}``."""

    def __init__(self, stream: TextIO | None = None, **kw) -> None:
        super().__init__(**kw)
        self.stream = stream if stream is not None else sys.stdout
        self._last_key = None

    def show(self) -> None:
        key = (self.stage, round(self.fraction, 2))
        if key == self._last_key:
            return
        self._last_key = key
        record = {"event": "progress", "stage": self.stage, "fraction": round(self.fraction, 4),
                  "message": self.message, "elapsed": round(self.timings.get(self.stage, 0.0), 3)}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


ProgressFn = Callable[[str, float], None]
