"""Every environment variable the engine reads, and the cache root.

=============================  ==============================================================
variable                       effect
=============================  ==============================================================
``PANST3R_HOME``               cache root (weights, licences, embeddings, service jobs)
``PANST3R_OFFLINE``            ``1``: never touch the network (downloads refused with a sentence)
``PANST3R_WEIGHTS_BASE_URL``   a mirror laid out like the cache's ``weights/`` folder
``PANST3R_FUSED_ATTN``         ``0``: explicit-softmax attention instead of SDPA (reference twin)
``PANST3R_SPLAT_BACKEND``      ``torch`` | ``gsplat``: force a splat rasteriser (default auto)
=============================  ==============================================================
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_HOME = "PANST3R_HOME"
ENV_OFFLINE = "PANST3R_OFFLINE"
ENV_BASE_URL = "PANST3R_WEIGHTS_BASE_URL"
ENV_FUSED_ATTN = "PANST3R_FUSED_ATTN"
ENV_SPLAT_BACKEND = "PANST3R_SPLAT_BACKEND"


def cache_root() -> Path:
    """``$PANST3R_HOME``, else the platform's per-user cache folder (never the package folder)."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "panst3r" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "panst3r"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "panst3r"


def offline() -> bool:
    """``PANST3R_OFFLINE`` set to anything but empty/0/false/no: never touch the network."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def weights_base_url() -> str | None:
    """The weights mirror, if one is configured."""
    return os.environ.get(ENV_BASE_URL) or None


def fused_attention_default() -> bool:
    """SDPA unless ``PANST3R_FUSED_ATTN=0``."""
    return os.environ.get(ENV_FUSED_ATTN, "1") != "0"


def splat_backend() -> str:
    """``auto`` unless ``PANST3R_SPLAT_BACKEND`` names one."""
    return os.environ.get(ENV_SPLAT_BACKEND, "auto").strip().lower() or "auto"
