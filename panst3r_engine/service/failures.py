"""Why a job failed, as ``{"code", "message"}``: one sentence a user can act on, never a traceback."""

from __future__ import annotations

from panst3r_engine.errors import PanSt3RError


def describe_failure(exc: BaseException) -> dict:
    """The job's ``error`` for an exception raised while it ran (the caller logs unexpected ones with traceback)."""
    import torch

    if isinstance(exc, PanSt3RError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, MemoryError):
        return {
            "code": "out_of_memory",
            "message": "the engine ran out of memory; use fewer keyframes or split the photos into smaller jobs",
        }
    return {
        "code": "internal",
        "message": f"the engine failed unexpectedly ({type(exc).__name__}); see the engine's log for details",
    }
