"""Class vocabularies and their text embeddings.

The classifier compares each query with one unit-norm text embedding per
class. Embeddings are read from an ``.npz`` holding ``names`` [C] and
``embeddings`` [C, D] (D = 768 for the SigLIP text tower of the released models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class VocabularyError(ValueError):
    """A vocabulary or embedding file that cannot be used, with the reason."""


@dataclass(frozen=True)
class ClassEmbeddings:
    names: list[str]
    vectors: torch.Tensor  # [C, D] float32, unit rows

    def __len__(self) -> int:
        return len(self.names)


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (the official text encoder's output convention)."""
    return vectors / vectors.norm(dim=-1, keepdim=True)


def load_embeddings(path: str | os.PathLike, expected_dim: int | None = None) -> ClassEmbeddings:
    """Read ``names`` + ``embeddings`` from an ``.npz``, validating shapes and values."""
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"class embedding file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "names" not in data or "embeddings" not in data:
                raise VocabularyError(f"{path} must hold arrays 'names' and 'embeddings' (found {sorted(data.files)})")
            names = [str(n) for n in data["names"].tolist()]
            vectors = np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, ValueError) as exc:
        if isinstance(exc, VocabularyError):
            raise
        raise VocabularyError(f"{path} is not a readable .npz file ({exc})") from exc
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise VocabularyError(f"{path}: 'embeddings' must be [C, D] with C = {len(names)} names, got {vectors.shape}")
    if len(names) == 0:
        raise VocabularyError(f"{path} holds no classes")
    if expected_dim is not None and vectors.shape[1] != expected_dim:
        raise VocabularyError(f"{path}: embeddings are {vectors.shape[1]}-d but the model expects {expected_dim}-d")
    if not np.isfinite(vectors).all() or (np.linalg.norm(vectors, axis=1) == 0).any():
        raise VocabularyError(f"{path}: embeddings contain NaN, infinity or all-zero rows")
    return ClassEmbeddings(names, normalise(torch.from_numpy(vectors)))


def save_embeddings(path: str | os.PathLike, names: list[str], vectors: np.ndarray | torch.Tensor) -> Path:
    path = Path(path)
    vectors = vectors.detach().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
    np.savez(path, names=np.asarray(names), embeddings=vectors.astype(np.float32))
    return path


def random_embeddings(names: list[str], dim: int, seed: int = 0) -> ClassEmbeddings:
    """Seeded random unit vectors, for tests and smoke runs without a text model."""
    gen = torch.Generator().manual_seed(seed)
    return ClassEmbeddings(list(names), normalise(torch.randn(len(names), dim, generator=gen)))
