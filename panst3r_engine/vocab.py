"""Class vocabularies, their text embeddings, an embedding cache, and class colours.

The classifier compares each query with one unit-norm text embedding per
class. Embeddings are read from an ``.npz`` holding ``names`` [C] and
``embeddings`` [C, D] (D = 768 for the SigLIP text tower of the released models).

Vocabularies are the three presets of the official demo, in the official order
(``vocabularies/*.json``, provenance in ``vocabularies/README.md``), or a user file.
The embeddings of a vocabulary are cached under ``<cache>/embeddings/`` and computed with
the SigLIP text tower (:mod:`panst3r_engine.text_encoder`) when they are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

PRESETS = ("scannetpp", "coco", "ade20k")
PRESET_ALIASES = {"scannet": "scannetpp", "scannet++": "scannetpp", "ade": "ade20k", "ade20k-150": "ade20k"}
MAX_CLASSES = 4096
TEXT_MODEL_ID = "google/siglip-base-patch16-224"
# Bump when the embedding recipe changes, so old cache entries stop matching.
EMBEDDING_RECIPE = "siglip-text prompt='This is a photo of {}.' padding=max_length:64 attention_mask pooler_output l2"
_STUFF_SUFFIX, _THING_SUFFIX = ";stuff", ";thing"


class VocabularyError(ValueError):
    """A vocabulary or embedding file that cannot be used, with the reason."""


@dataclass(frozen=True)
class ClassEmbeddings:
    names: list[str]
    vectors: torch.Tensor  # [C, D] float32, unit rows
    isthing: list[bool] | None = None  # per class, when the vocabulary says so

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Vocabulary:
    """Ordered class names (the column order of the class logits) and their thing/stuff flags."""

    names: tuple[str, ...]
    isthing: tuple[bool, ...]
    source: str = ""

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


# ---------------------------------------------------------------- vocabularies


def validate_names(names: list[str], where: str) -> None:
    """Reject what would make columns ambiguous or prompts malformed: empty, duplicate, multi-line names."""
    if not names:
        raise VocabularyError(f"{where}: the vocabulary is empty")
    if len(names) > MAX_CLASSES:
        raise VocabularyError(f"{where}: {len(names)} classes, more than the supported {MAX_CLASSES}")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise VocabularyError(f"{where}: class {i} has an empty name")
        if "\n" in name or "\r" in name:
            raise VocabularyError(f"{where}: class {i} ({name!r}) contains a line break")
        if name in seen:
            raise VocabularyError(f"{where}: duplicate class name {name!r} (class {i})")
        seen.add(name)


def _make(names: list[str], isthing: list[bool], source: str) -> Vocabulary:
    validate_names(names, source)
    return Vocabulary(tuple(names), tuple(bool(t) for t in isthing), source)


def _entries_from_json(data: object, where: str) -> tuple[list[str], list[bool]]:
    """A JSON list of names, or of ``{"name", "isthing"}`` objects (isthing defaults to True)."""
    if not isinstance(data, list):
        raise VocabularyError(f"{where}: expected a JSON list of class names or {{'name', 'isthing'}} objects")
    names, things = [], []
    for i, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
            things.append(bool(item.get("isthing", True)))
        elif isinstance(item, str):
            names.append(item)
            things.append(True)
        else:
            raise VocabularyError(f"{where}: entry {i} is neither a name nor an object with a 'name' string")
    return names, things


def _entries_from_text(text: str) -> tuple[list[str], list[bool]]:
    """One class per line; '#' starts a comment; a ';stuff' (or ';thing') suffix sets the flag."""
    names, things = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        thing = True
        for suffix, flag in ((_STUFF_SUFFIX, False), (_THING_SUFFIX, True)):
            if line.lower().endswith(suffix):
                line, thing = line[: -len(suffix)].strip(), flag
        names.append(line)
        things.append(thing)
    return names, things


@lru_cache(maxsize=None)
def _preset_entries(preset: str) -> tuple[dict, ...]:
    """The packaged JSON entries of a preset (name, isthing, optional official colour)."""
    text = (resources.files("panst3r_engine") / "vocabularies" / f"{preset}.json").read_text("utf-8")
    return tuple(json.loads(text))


def preset_name(spec: str) -> str | None:
    """The canonical preset for a spec ('scannet' -> 'scannetpp'), or None if it is not a preset."""
    key = spec.strip().lower()
    key = PRESET_ALIASES.get(key, key)
    return key if key in PRESETS else None


def load_vocabulary(spec: str | os.PathLike) -> Vocabulary:
    """A preset name (``scannetpp``/``scannet``, ``coco``, ``ade20k``) or a ``.txt``/``.json`` class file."""
    preset = preset_name(str(spec)) if isinstance(spec, str) else None
    if preset is not None:
        names, things = _entries_from_json(list(_preset_entries(preset)), preset)
        return _make(names, things, preset)
    path = Path(spec)
    if not path.is_file():
        raise VocabularyError(f"vocabulary {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) "
                              "nor an existing file")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read vocabulary file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"{path} is not valid JSON: {exc}") from exc
        names, things = _entries_from_json(data, str(path))
    else:
        names, things = _entries_from_text(text)
    return _make(names, things, str(path))


def merge_vocabularies(vocabularies: list[Vocabulary]) -> Vocabulary:
    """Union keeping first occurrences in order (the demo uses ``list(set(...))``, whose order is random)."""
    seen: dict[str, bool] = {}
    for vocab in vocabularies:
        for name, thing in zip(vocab.names, vocab.isthing):
            seen.setdefault(name, thing)
    return _make(list(seen), list(seen.values()), "+".join(v.source for v in vocabularies))


# ---------------------------------------------------------------- embedding cache


def embeddings_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/embeddings``; ``<cache>`` defaults to the engine's cache root (``$PANST3R_HOME`` ...)."""
    if cache_dir is None:
        from panst3r_engine.weights import cache_root

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
            np.savez(f, names=np.asarray(emb.names), embeddings=emb.vectors.numpy().astype(np.float32),
                     model_id=np.asarray(model_id), model_fingerprint=np.asarray(fingerprint),
                     recipe=np.asarray(EMBEDDING_RECIPE))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_embeddings(emb: ClassEmbeddings, cache_dir: str | os.PathLike | None = None,
                     model_id: str = TEXT_MODEL_ID) -> Path:
    """Store embeddings computed elsewhere (e.g. on another machine) so jobs find them offline."""
    path = embeddings_cache_dir(cache_dir) / f"{cache_key(tuple(emb.names), model_id)}.npz"
    _write_cache(path, ClassEmbeddings(list(emb.names), normalise(emb.vectors.float())), model_id, "")
    return path


def _missing_model_message(vocab: Vocabulary, model_dir: str | os.PathLike | None, reason: str = "") -> str:
    where = f"no text model at {model_dir}" if model_dir else "no text model was given"
    return (f"no cached class embeddings for the {len(vocab)}-class vocabulary '{vocab.source or 'custom'}' and "
            f"{where}{reason}. Fetch the SigLIP text tower and tokenizer ({TEXT_MODEL_ID}) with "
            "`python -m panst3r_engine weights download siglip-text`, or pass precomputed embeddings "
            "with --vocab-embeddings EMB.npz.")


def embeddings_for(vocabulary: Vocabulary, model_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   model_id: str = TEXT_MODEL_ID) -> ClassEmbeddings:
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
        from panst3r_engine.text_encoder import compute_embeddings

        cached = compute_embeddings(list(vocabulary.names), model_dir, device=device)
        _write_cache(path, cached, model_id, fingerprint)
    return ClassEmbeddings(list(vocabulary.names), cached.vectors, list(vocabulary.isthing))


def default_text_model_dir() -> Path | None:
    """The SigLIP text tower fetched by ``weights download siglip-text``, if it is there."""
    try:
        from panst3r_engine.weights import weights_path

        path = weights_path("siglip-text")
    except Exception:  # registry missing or renamed: behave as if nothing was downloaded
        return None
    return path if path.is_dir() else None


def resolve_class_embeddings(vocab: str, vocab_embeddings: str | None, text_dim: int, seed: int = 0,
                             model_dir: str | os.PathLike | None = None) -> ClassEmbeddings:
    """The job's class embeddings: an ``.npz`` file, ``'random'`` (smoke runs), or cached/computed SigLIP."""
    vocabulary = load_vocabulary(vocab)
    if vocab_embeddings == "random":
        emb = random_embeddings(list(vocabulary.names), text_dim, seed)
        return ClassEmbeddings(emb.names, emb.vectors, list(vocabulary.isthing))
    if vocab_embeddings:
        emb = load_embeddings(vocab_embeddings, expected_dim=text_dim)
        flags = dict(zip(vocabulary.names, vocabulary.isthing))
        return ClassEmbeddings(emb.names, emb.vectors, [flags.get(n, True) for n in emb.names])
    emb = embeddings_for(vocabulary, model_dir if model_dir is not None else default_text_model_dir())
    if emb.vectors.shape[1] != text_dim:
        raise VocabularyError(f"the text model gives {emb.vectors.shape[1]}-d embeddings "
                              f"but the model expects {text_dim}-d")
    return emb


# ---------------------------------------------------------------- colours


@lru_cache(maxsize=1)
def _official_colors() -> dict[str, tuple[int, int, int]]:
    """Name -> published colour: COCO panoptic first, then the ADE20k palette for names COCO lacks."""
    table: dict[str, tuple[int, int, int]] = {}
    for preset in ("coco", "ade20k"):
        for entry in _preset_entries(preset):
            if "color" in entry:
                table.setdefault(entry["name"], tuple(int(c) for c in entry["color"]))
    return table


def class_color(name: str) -> tuple[int, int, int]:
    """Stable (r, g, b) of a class name: the dataset's published colour for preset names, else a
    hash of the name mapped to a well saturated, mid-to-bright HSV colour."""
    official = _official_colors()
    color = official.get(name) or official.get(name.strip())
    if color is not None:
        return color
    from panst3r_engine.colors import class_color as hashed_color

    return hashed_color(name)
