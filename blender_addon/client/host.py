"""Which engine a job talks to: a warm local subprocess kept across jobs, or a remote URL. No bpy."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .engine import EngineClient, EngineError, LocalConfig, LocalEngine


@dataclass
class EngineSettings:
    """The engine choice from the add-on preferences."""

    mode: str  # "LOCAL" | "REMOTE"
    local: LocalConfig | None = None
    url: str = ""
    token: str = ""


class EngineHost:
    """Keeps one local engine running between jobs (the model stays loaded); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: LocalEngine | None = None
        self._key: tuple | None = None

    def connect(self, settings: EngineSettings) -> EngineClient:
        """A client for the configured engine, starting (or restarting) the local one if needed."""
        if settings.mode == "REMOTE":
            if not settings.url:
                raise EngineError("no engine URL is set; enter it in the add-on preferences")
            return EngineClient(settings.url, settings.token)
        if settings.local is None:
            raise EngineError("the local engine is not configured; see the add-on preferences")
        with self._lock:
            key = settings.local.key()
            if self._engine is not None and (key != self._key or not self._engine.alive()):
                self._engine.stop()
                self._engine = None
            if self._engine is None:
                self._engine = LocalEngine.start(settings.local)
                self._key = key
            return self._engine.client

    @property
    def engine(self) -> LocalEngine | None:
        return self._engine

    def describe(self) -> str:
        """One line for the panel: whether a local engine runs, where, and its log."""
        engine = self._engine
        if engine is None:
            return "not running"
        if not engine.alive():
            return f"stopped (exit code {engine.process.returncode}); log: {engine.log_path}"
        return f"running at {engine.url} (pid {engine.process.pid})"

    def stop(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.stop()
            self._engine, self._key = None, None
