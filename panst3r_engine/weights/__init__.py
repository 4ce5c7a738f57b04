"""Checkpoints, the text tower and MUSt3R's retrieval head: registry, licence, download, CLI.

The PanSt3R checkpoints are under NAVER LABS Europe's non-commercial licence,
so this MIT code never bundles them: users fetch them once into a cache, after
accepting the licence once.

- :mod:`.registry`: what exists, where it lives in the cache, how to get it by hand
- :mod:`.licence`: acceptance, recorded once
- :mod:`.download`, :mod:`.http`: resumable, checksummed downloads
- :mod:`.cli`: ``python -m panst3r_engine weights list|download|verify|path``
"""

from panst3r_engine.weights.download import download, verify
from panst3r_engine.weights.licence import accept_licence, is_accepted, require_licence
from panst3r_engine.weights.registry import (
    ALIASES,
    REGISTRY,
    LicenseNotAccepted,
    WeightsEntry,
    WeightsError,
    get_entry,
    is_present,
    list_weights,
    manual_instructions,
    resolve_weights,
    weights_dir,
    weights_path,
)

__all__ = [
    "ALIASES",
    "REGISTRY",
    "LicenseNotAccepted",
    "WeightsEntry",
    "WeightsError",
    "accept_licence",
    "download",
    "get_entry",
    "is_accepted",
    "is_present",
    "list_weights",
    "manual_instructions",
    "require_licence",
    "resolve_weights",
    "verify",
    "weights_dir",
    "weights_path",
]
