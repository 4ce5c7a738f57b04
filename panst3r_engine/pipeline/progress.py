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
    """Progress for people: on a terminal, one bar per stage redrawn in place at most ``rate`` times a second;
    elsewhere (a log file, a pipe, CI), plain lines: one per stage at most every ``log_interval`` seconds while it
    runs, and one when it ends.
    """

    BAR = 24

    def __init__(
        self,
        stream: TextIO | None = None,
        rate: float = 8.0,
        log_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.log_interval, self.clock = 1.0 / rate, log_interval, clock
        self._last, self._shown_stage, self._shown = float("-inf"), None, None
        self._width = 0  # length of the line on screen, so a shorter redraw can blank the rest

    def show(self) -> None:
        now, done, tty = self.clock(), self.fraction >= 1.0, self.stream.isatty()
        state = (self.stage, self.fraction, self.message)
        if state == self._shown:  # nothing new (e.g. a stage reported finished twice)
            return
        if not done:
            if tty and self.stage == self._shown_stage and now - self._last < self.interval:
                return
            if not tty and now - self._last < self.log_interval:
                return
        self._last, self._shown_stage, self._shown = now, self.stage, state
        percent = f"{self.fraction * 100:5.1f}% {self.message[:40]}".rstrip()
        if not tty:
            self.stream.write(f"{self.stage:<17} {percent}\n")
        else:
            filled = int(self.fraction * self.BAR)
            text = f"{self.stage:<17} [{'#' * filled}{'.' * (self.BAR - filled)}] {percent}"
            pad = " " * max(0, self._width - len(text))  # blank what a longer previous line left
            self._width = 0 if done else len(text)
            self.stream.write("\r" + text + pad + ("\n" if done else ""))
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
        record = {
            "event": "progress",
            "stage": self.stage,
            "fraction": round(self.fraction, 4),
            "message": self.message,
            "elapsed": round(self.timings.get(self.stage, 0.0), 3),
        }
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


ProgressFn = Callable[[str, float], None]
