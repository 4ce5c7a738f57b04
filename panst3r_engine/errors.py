"""The engine's one error base.

Every failure a user can act on is a :class:`PanSt3RError`: it carries one
sentence (``str(exc)``), a stable ``code`` (the service's error code) and an
optional ``hint``. The CLI and the service each catch it once; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class PanSt3RError(Exception):
    """A failure with a sentence that says what to do."""

    code = "internal"

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self) or type(self).__name__


class OptionsError(PanSt3RError):
    """Job or command options that cannot be used."""

    code = "bad_options"


class Cancelled(Exception):
    """Raised inside a job when its cancellation was requested (a control signal, not an error)."""
