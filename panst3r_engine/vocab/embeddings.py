"""Class text embeddings: files, the on-disk cache, and the job's embeddings.

The classifier compares each query with one unit-norm text embedding per class. Embeddings are read
from an ``.npz`` holding ``names`` [C] and ``embeddings`` [C, D] (D = 768 for the SigLIP text tower of
the released models). The embeddings of a vocabulary are cached under ``<cache>/embeddings/`` and
computed with the SigLIP text tower (:mod:`.text_encoder`) when they are missing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from panst3r_engine.config import cache_root
from panst3r_engine.vocab import text_encoder
from panst3r_engine.vocab.checkpoint import CheckpointClasses, default_vocabulary, missing_checkpoint_classes
from panst3r_engine.vocab.text_encoder import normalise
from panst3r_engine.vocab.vocabularies import CHECKPOINT_VOCAB, Vocabulary, VocabularyError, load_vocabulary
from panst3r_engine.weights.registry import get_entry, is_present, manual_instructions, missing_files, weights_path

TEXT_MODEL_ID = "google/siglip-base-patch16-224"


# Bump when the embedding recipe changes, so old cache entries stop matching.
EMBEDDING_RECIPE = "siglip-text prompt='This is a photo of {}.' padding=max_length:64 attention_mask pooler_output l2"


@dataclass(frozen=True)
class ClassEmbeddings:
    names: list[str]
    vectors: torch.Tensor  # [C, D] float32, unit rows
    isthing: list[bool] | None = None  # per class, when the vocabulary says so
    source: str = ""  # ``Vocabulary.source`` (a preset name or a file), which decides the class colours

    def __len__(self) -> int:
        return len(self.names)


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


def embeddings_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/embeddings``; ``<cache>`` defaults to the engine's cache root (``$PANST3R_HOME`` ...)."""
    if cache_dir is None:
        cache_dir = cache_root()
    return Path(cache_dir) / "embeddings"


def cache_key(names: list[str] | tuple[str, ...], model_id: str = TEXT_MODEL_ID) -> str:
    """sha256 of the model id, the recipe and the ordered names: one cache file per (model, vocabulary)."""
    text = "\n".join([model_id, EMBEDDING_RECIPE, *names])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_digest(path: Path, whole_limit: int = 8 << 20, edge: int = 1 << 20) -> str:
    """Full sha256 of small files. For big weight files, size + first/last MiB: fast, and it still
    tells different checkpoints apart."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= whole_limit:
            h.update(f.read())
        else:
            h.update(f.read(edge))
            f.seek(size - edge)
            h.update(f.read(edge))
    return f"{size}:{h.hexdigest()}"


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Identity of a local text-model folder, from its files (names, sizes, content hashes)."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    text = "\n".join(f"{p.name} {_file_digest(p)}" for p in files)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_cache(path: Path, names: tuple[str, ...], fingerprint: str | None) -> ClassEmbeddings | None:
    """The cached embeddings if the entry is readable, holds these names and (when given) this model.

    Vectors come back bit-identical to what was computed (no second normalisation).
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_names = tuple(str(n) for n in data["names"].tolist())
            vectors = np.asarray(data["embeddings"], dtype=np.float32)
            stored = str(data["model_fingerprint"]) if "model_fingerprint" in data else None
    except (KeyError, OSError, ValueError):
        return None
    if stored_names != names or vectors.ndim != 2 or vectors.shape[0] != len(names):
        return None
    if not np.isfinite(vectors).all():
        return None
    if fingerprint is not None and stored != fingerprint:
        return None
    return ClassEmbeddings(list(names), torch.from_numpy(vectors))


def _write_cache(path: Path, emb: ClassEmbeddings, model_id: str, fingerprint: str) -> None:
    """Write to a temporary file in the same folder, then rename, so readers never see a partial entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                names=np.asarray(emb.names),
                embeddings=emb.vectors.numpy().astype(np.float32),
                model_id=np.asarray(model_id),
                model_fingerprint=np.asarray(fingerprint),
                recipe=np.asarray(EMBEDDING_RECIPE),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_embeddings(
    emb: ClassEmbeddings, cache_dir: str | os.PathLike | None = None, model_id: str = TEXT_MODEL_ID
) -> Path:
    """Store embeddings computed elsewhere (e.g. on another machine) so jobs find them offline."""
    path = embeddings_cache_dir(cache_dir) / f"{cache_key(tuple(emb.names), model_id)}.npz"
    _write_cache(path, ClassEmbeddings(list(emb.names), normalise(emb.vectors.float())), model_id, "")
    return path


def _missing_model_message(vocab: Vocabulary, model_dir: str | os.PathLike | None, reason: str = "") -> str:
    what = f"no cached class embeddings for the {len(vocab)}-class vocabulary '{vocab.source or 'custom'}'"
    incomplete = _incomplete_default_model() if model_dir is None else None
    if incomplete:
        return f"{what} and {incomplete}{reason}, or pass precomputed embeddings with --vocab-embeddings EMB.npz."
    where = f"no text model at {model_dir}" if model_dir else "no text model was given"
    return (
        f"{what} and {where}{reason}. Fetch the SigLIP text tower and tokenizer ({TEXT_MODEL_ID}) with "
        "`python -m panst3r_engine weights download siglip-text`, or pass precomputed embeddings "
        "with --vocab-embeddings EMB.npz."
    )


def _incomplete_default_model() -> str | None:
    """Which files to place where, when the cache holds a text-model folder that lacks some of its files."""
    entry = get_entry("siglip-text")
    return manual_instructions(entry) if weights_path(entry).is_dir() and missing_files(entry) else None


def embeddings_for(
    vocabulary: Vocabulary,
    model_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    model_id: str = TEXT_MODEL_ID,
) -> ClassEmbeddings:
    """Cached text embeddings of ``vocabulary``, computed with the text model in ``model_dir`` when missing.

    With a model, a cache entry is trusted only if it was made from the same model files
    (fingerprint). Without one, any entry made for ``model_id`` is used.
    """
    path = embeddings_cache_dir(cache_dir) / f"{cache_key(vocabulary.names, model_id)}.npz"
    have_model = model_dir is not None and Path(model_dir).is_dir()
    fingerprint = model_fingerprint(model_dir) if have_model else None
    cached = _read_cache(path, vocabulary.names, fingerprint)
    if cached is None and not have_model:
        raise VocabularyError(_missing_model_message(vocabulary, model_dir))
    if cached is None:
        vectors = text_encoder.compute_embeddings(list(vocabulary.names), model_dir, device=device)
        cached = ClassEmbeddings(list(vocabulary.names), vectors)
        _write_cache(path, cached, model_id, fingerprint)
    return ClassEmbeddings(list(vocabulary.names), cached.vectors, list(vocabulary.isthing), vocabulary.source)


def default_text_model_dir() -> Path | None:
    """The SigLIP text tower fetched by ``weights download siglip-text``, if it is there with all its files.

    A folder that lacks some files (an interrupted download by an older engine) counts as absent, so the
    error names the missing files instead of the tokenizer failing on them.
    """
    return weights_path("siglip-text") if is_present("siglip-text") else None


def resolve_class_embeddings(
    vocab: str | None,
    vocab_embeddings: str | None,
    text_dim: int,
    seed: int = 0,
    model_dir: str | os.PathLike | None = None,
    checkpoint: CheckpointClasses | None = None,
    weights: str = "in use",
) -> ClassEmbeddings:
    """The job's class embeddings: an ``.npz`` file, ``'random'`` (smoke runs), the checkpoint's own, or SigLIP.

    ``vocab`` None means the checkpoint's classes when it carries them (``checkpoint``), else ScanNet++.
    Without an explicit embedding file, a checkpoint's stored embeddings serve every vocabulary whose
    names it holds (its own classes, ``eval run``'s scene classes): they are what its decoder learned.
    """
    if vocab is None:
        vocab = default_vocabulary(checkpoint)
    if vocab.strip().lower() == CHECKPOINT_VOCAB:
        if checkpoint is None:
            raise missing_checkpoint_classes(weights)
        vocabulary = checkpoint.vocabulary
    else:
        vocabulary = load_vocabulary(vocab)
    if vocab_embeddings == "random":
        emb = random_embeddings(list(vocabulary.names), text_dim, seed)
        return ClassEmbeddings(emb.names, emb.vectors, list(vocabulary.isthing), vocabulary.source)
    if vocab_embeddings:
        emb = load_embeddings(vocab_embeddings, expected_dim=text_dim)
        flags = dict(zip(vocabulary.names, vocabulary.isthing))
        return ClassEmbeddings(emb.names, emb.vectors, [flags.get(n, True) for n in emb.names], vocabulary.source)
    stored = stored_rows(checkpoint, vocabulary)
    if stored is not None:
        return ClassEmbeddings(list(vocabulary.names), stored, list(vocabulary.isthing), vocabulary.source)
    emb = embeddings_for(vocabulary, model_dir if model_dir is not None else default_text_model_dir())
    if emb.vectors.shape[1] != text_dim:
        raise VocabularyError(
            f"the text model gives {emb.vectors.shape[1]}-d embeddings but the model expects {text_dim}-d"
        )
    return emb


def stored_rows(checkpoint: CheckpointClasses | None, vocabulary: Vocabulary) -> torch.Tensor | None:
    """The checkpoint's embeddings of ``vocabulary``'s names, in its order, when it stores every one of them."""
    if checkpoint is None or checkpoint.vectors is None:
        return None
    row = {name: i for i, name in enumerate(checkpoint.vocabulary.names)}
    if not all(name in row for name in vocabulary.names):
        return None
    return checkpoint.vectors[[row[name] for name in vocabulary.names]]
