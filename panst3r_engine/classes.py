"""Which classes a job segments, and their text embeddings.

Three sources, in the order a user reaches for them: a precomputed ``.npz``,
``random`` (seeded unit vectors, for smoke tests without a text model), or
the vocabulary's SigLIP embeddings from the on-disk cache (computed once when
the text model is available).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from panst3r_engine.vocab import VocabularyError, load_embeddings, random_embeddings


@dataclass(frozen=True)
class JobClasses:
    names: list[str]
    vectors: torch.Tensor  # [C, D] unit rows
    isthing: list[bool]


def _siglip_dir():
    try:
        from panst3r_engine.weights import is_present, weights_path

        return weights_path("siglip-text") if is_present("siglip-text") else None
    except Exception:  # registry without a text entry, or an unreadable cache
        return None


def resolve_class_embeddings(vocab_spec: str, embeddings_spec: str | None, dim: int, seed: int = 0) -> JobClasses:
    """Class names, embeddings [C, dim] and stuff/thing flags for a job."""
    from panst3r_engine.vocab import embeddings_for, load_vocabulary

    vocabulary = load_vocabulary(vocab_spec)
    flags = dict(zip(vocabulary.names, vocabulary.isthing))
    if embeddings_spec == "random":
        emb = random_embeddings(list(vocabulary.names), dim, seed)
    elif embeddings_spec:
        emb = load_embeddings(embeddings_spec, expected_dim=dim)
    else:
        emb = embeddings_for(vocabulary, model_dir=_siglip_dir())
        if emb.vectors.shape[1] != dim:
            raise VocabularyError(f"cached embeddings are {emb.vectors.shape[1]}-d but the model expects {dim}-d")
    return JobClasses(list(emb.names), emb.vectors.float(), [bool(flags.get(n, True)) for n in emb.names])
