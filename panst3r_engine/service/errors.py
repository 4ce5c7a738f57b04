"""The one error type of the service, turned into ``{"error": {"code", "message"}}`` by the app."""

from __future__ import annotations

from panst3r_engine.errors import PanSt3RError


class ApiError(PanSt3RError):
    """A request the service refuses, with an HTTP status, a stable code and a sentence a user can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def error_body(code: str, message: str) -> dict:
    """The JSON body of every error response."""
    return {"error": {"code": code, "message": message}}
