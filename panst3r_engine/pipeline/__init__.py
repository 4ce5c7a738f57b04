"""The engine's job: photos in, result bundle out.

- :mod:`.options`: :class:`JobOptions`, the one declaration of every job option
- :mod:`.run`: :func:`run_job`, the stage sequence with typed hand-offs
- :mod:`.images`, :mod:`.cameras`, :mod:`.points`, :mod:`.assemble`: the stages after the network
- :mod:`.memory`: the memory check before a job
- :mod:`.progress`: progress reporting and cancellation

Names load lazily (PEP 562) so that the CLI can read the options without importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "JobOptions": "options",
    "POSTPROCESS_METHODS": "options",
    "run_job": "run",
    "JobResult": "reconstruction",
    "Reconstruction": "reconstruction",
    "Camera": "reconstruction",
    "Segment": "reconstruction",
    "Progress": "progress",
    "TextProgress": "progress",
    "JsonProgress": "progress",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
