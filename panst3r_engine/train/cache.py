"""Frozen backbone features on disk: MUSt3R + DINOv2 run once per training sample.

Only the panoptic decoder is trained (PanSt3R fact sheet §1.2), so the per-token concat
``MUSt3R encoder ‖ MUSt3R decoder render (after norm_dec) ‖ DINOv2`` of a sample never changes.
It is computed once, as inference computes it (memory over all the sample's views in batches
[2, 1, 1, ...], then a render of every view), and stored as ``<key>.pt`` where the key hashes
the sample's pixels and the frozen weights. A later run, or another run from the same
checkpoint, reuses it; a different image or backbone can never hit a stale entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from panst3r_engine.model.inference import memory_batches

FROZEN_PREFIXES = ("must3r_encoder.", "must3r_decoder.", "dino_encoder.")
CACHE_FORMAT = "panst3r-train-features-1"


@dataclass(frozen=True)
class Features:
    tokens: torch.Tensor  # [V, N, concat_dim] float32
    pos: torch.Tensor  # [V, N, 2] int64 (row, col) on the patch grid


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the frozen tensors' names, shapes, dtypes and bytes."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(FROZEN_PREFIXES):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def sample_key(images: torch.Tensor, fingerprint: str) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@torch.no_grad()
def compute_features(model: torch.nn.Module, images: torch.Tensor, amp: bool = False) -> Features:
    """Backbone concat of V same-size views [V, 3, H, W] (all views are in the memory)."""
    device = next(model.parameters()).device
    images = images.to(device, torch.float32)
    tokens, pos = model.must3r_encoder(images)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        memory, start = None, 0
        for size in memory_batches(len(images)):
            chunk = range(start, start + size)
            memory = model.must3r_decoder.update([tokens[i] for i in chunk], [pos[i] for i in chunk], memory)
            start += size
        dec, _ = model.must3r_decoder.render(tokens, pos, memory)
        dino = model.dino_encoder(images)
    concat = torch.cat((tokens.float(), dec.float(), dino.float()), dim=-1)
    return Features(concat.cpu(), pos.cpu())


class FeatureCache:
    """``get(images)``: cached features, computed and stored atomically on a miss."""

    def __init__(self, folder: str | os.PathLike, model: torch.nn.Module, amp: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.amp = model, amp
        self.fingerprint = backbone_fingerprint(model)
        self.hits = self.misses = 0
        self._memory: dict[str, Features] = {}

    def path(self, images: torch.Tensor) -> Path:
        return self.folder / f"{sample_key(images, self.fingerprint)}.pt"

    def get(self, images: torch.Tensor) -> Features:
        path = self.path(images)
        if path.name in self._memory:
            return self._memory[path.name]
        features = self._load(path, images)
        if features is None:
            self.misses += 1
            features = compute_features(self.model, images, self.amp)
            self._store(path, features)
        else:
            self.hits += 1
        return features

    def keep_in_memory(self, images: torch.Tensor) -> None:
        """Hold a sample's features in RAM too (small datasets: no disk read per step)."""
        path = self.path(images)
        self._memory[path.name] = self.get(images)

    def _load(self, path: Path, images: torch.Tensor) -> Features | None:
        """The stored entry, or None when absent or not what this sample needs (then recomputed)."""
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            tokens, pos = data["tokens"], data["pos"]
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError):
            return None
        views, _, height, width = images.shape
        patch = self.model.patch_size
        patches = (height // patch) * (width // patch)
        if not (
            isinstance(tokens, torch.Tensor)
            and isinstance(pos, torch.Tensor)
            and tokens.ndim == 3
            and tokens.shape[:2] == (views, patches)
            and pos.shape == (views, patches, 2)
        ):
            return None
        return Features(tokens.float(), pos.long())

    def _store(self, path: Path, features: Features) -> None:
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".partial", dir=self.folder)
        os.close(fd)
        try:
            torch.save({"format": CACHE_FORMAT, "tokens": features.tokens, "pos": features.pos}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.pt"))
