"""Local HTTP job service (API version 1) used by the Blender add-on, also usable remotely.

``create_app`` builds the Flask app, ``serve`` runs it (``python -m
panst3r_engine serve``), ``add_serve_command`` adds that sub-command to the CLI.
Importing this package (or ``service.server``) loads neither Flask nor torch:
building the CLI parser stays cheap.
"""

from __future__ import annotations

import importlib

API_VERSION = 1

_LAZY = {"create_app": "app", "EngineServer": "server", "add_serve_command": "server", "serve": "server"}
__all__ = ["API_VERSION", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
