"""Why a job failed, as ``{"code", "message"}``: one sentence a user can act on, never a traceback."""

from __future__ import annotations

from panst3r_engine.bundle import BundleError
from panst3r_engine.checkpoints import CheckpointError
from panst3r_engine.images import ImageError
from panst3r_engine.vocab import VocabularyError
from panst3r_engine.weights import WeightsError

# Most specific first: several of these subclass ValueError or RuntimeError.
_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (ImageError, "bad_image"),
    (VocabularyError, "bad_vocab"),
    (BundleError, "bundle"),
    (CheckpointError, "weights"),
    (WeightsError, "weights"),
    (MemoryError, "out_of_memory"),
    (FileNotFoundError, "missing_file"),
)


def describe_failure(exc: BaseException) -> dict:
    """The job's ``error`` for an exception raised while it ran."""
    import torch

    from panst3r_engine.service.errors import ApiError

    if isinstance(exc, ApiError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {"code": "out_of_memory", "message": "the GPU ran out of memory; use fewer keyframes or split the "
                "photos into smaller jobs"}
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return {"code": code, "message": str(exc) or kind.__name__}
    if isinstance(exc, ValueError):
        return {"code": "bad_options", "message": str(exc)}
    return {"code": "internal", "message": f"the engine failed unexpectedly ({type(exc).__name__}: {exc}); "
            "see the engine's log for details"}
