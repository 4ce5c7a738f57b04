"""Loading models once and keeping them warm (for the CLI, the service and benchmarks)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from panst3r_engine.devices import resolve_device
from panst3r_engine.model.checkpoints import file_md5, load_model
from panst3r_engine.model.configs import ModelConfig
from panst3r_engine.vocab.checkpoint import CheckpointClasses, checkpoint_classes


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: ModelConfig
    path: Path
    device: torch.device
    model_id: str
    classes: CheckpointClasses | None = None  # a trained checkpoint's own classes (official ones have none)

    @property
    def md5(self) -> str:
        return cached_md5(self.path)


def cached_md5(path: Path) -> str:
    """MD5 of a (large) file, remembered in ``<file>.md5.json`` keyed by size and mtime."""
    stat = path.stat()
    sidecar = path.with_name(path.name + ".md5.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        data = json.loads(sidecar.read_text())
        if {k: data.get(k) for k in key} == key:
            return data["md5"]
    except (OSError, ValueError, KeyError):
        pass
    digest = file_md5(path)
    try:
        sidecar.write_text(json.dumps({**key, "md5": digest}))
    except OSError:
        pass  # read-only cache: just recompute next time
    return digest


def resolve_weights_path(spec: str) -> tuple[Path, str]:
    """A registry id/alias ('v1', 'v2', 'panst3r-v2-512') or a file path -> (path, model id)."""
    candidate = Path(os.path.expanduser(spec))
    if candidate.suffix in (".pth", ".pt") or candidate.exists() or os.sep in spec:
        return candidate, candidate.name
    from panst3r_engine.weights.registry import resolve_weights

    path = resolve_weights(spec)
    return path, path.name


class ModelCache:
    """Keeps the most recently used model in memory; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._loaded: LoadedModel | None = None

    def get(self, spec: str, device: str = "auto", progress=None) -> LoadedModel:
        path, model_id = resolve_weights_path(spec)
        dev = resolve_device(device)
        key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else None, str(dev))
        with self._lock:
            if self._key == key and self._loaded is not None:
                return self._loaded
            if progress:
                progress("load_model", 0.0, path.name)
            self._loaded = None  # free the old model before loading another
            model, info = load_model(path, device=dev)
            classes = checkpoint_classes(info.args, info.class_embeddings, model.text_dim, f"checkpoint {path.name}")
            self._loaded = LoadedModel(model, info.config, path, dev, model_id, classes)
            self._key = key
            if progress:
                progress("load_model", 1.0, f"{info.config.version}")
            return self._loaded

    def clear(self) -> None:
        with self._lock:
            self._key, self._loaded = None, None
