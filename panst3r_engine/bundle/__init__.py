"""The result bundle: the versioned folder a job writes and the Blender add-on imports.

- :mod:`.spec`: the contract (names, dtypes, encodings, stage list; numpy only, vendored into the add-on)
- :mod:`.checks`: validation shared by writer and reader
- :mod:`.write`, :mod:`.read`: the engine's writer and reader
- :mod:`.exports`: per-instance PLY, COCO panoptic, GLB
- :mod:`.layout`: gravity-aligned boxes per instance and ``layout.json`` (numpy only, vendored into the add-on)
- :mod:`.interchange`: COLMAP text model, nerfstudio dataset (numpy only, vendored into the add-on)
- :mod:`.convert`: the ``export`` command (a bundle -> one format, written atomically)
- :mod:`.raw`: ``raw.npz`` (raw network outputs) and ``panoptic.npz``

The names below are imported on first use (PEP 562), so reading or exporting a bundle never loads the
writer's dependencies (the vocabulary colours pull in torch).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BundleError": "checks",
    "Bundle": "read",
    "read_bundle": "read",
    "FORMAT_VERSION": "spec",
    "decode_panoptic": "spec",
    "encode_panoptic": "spec",
    "check_output_folder": "write",
    "make_stems": "write",
    "publish_bundle": "write",
    "staging_path": "write",
    "write_bundle": "write",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
