"""A trained checkpoint's own classes: names, thing flags and text embeddings inside the ``.pth``.

``train`` writes ``args.classes`` and ``args.class_isthing`` into the official ``args`` namespace and
a ``class_embeddings`` tensor [C, D] beside ``weights``, so the checkpoint runs with the classes it
learned and needs no side files. Official checkpoints carry none of these. A checkpoint is
untrusted input: everything is checked here, before any copy of the tensor is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from panst3r_engine.vocab.vocabularies import CHECKPOINT_VOCAB, Vocabulary, VocabularyError, validate_names

# the entry of the checkpoint dict beside 'args' / 'weights' / 'epoch'
EMBEDDINGS_KEY = "class_embeddings"


@dataclass(frozen=True)
class CheckpointClasses:
    """What a checkpoint says about its classes; ``vectors`` is None for a checkpoint without embeddings."""

    vocabulary: Vocabulary
    vectors: torch.Tensor | None  # [C, D] float32, unit rows, in vocabulary order


def checkpoint_classes(args: dict, embeddings: object, text_dim: int, where: str) -> CheckpointClasses | None:
    """The validated classes of a checkpoint (``args`` and its ``class_embeddings`` entry), or None if it has none."""
    names = args.get("classes")
    if names is None:
        if embeddings is not None:
            raise VocabularyError(f"{where} has class embeddings but no class list; write it again with train")
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise VocabularyError(f"{where}: its 'classes' is not a list of class names; write it again with train")
    validate_names(names, where)
    isthing = args.get("class_isthing", [True] * len(names))
    if not isinstance(isthing, list) or len(isthing) != len(names) or not all(isinstance(t, bool) for t in isthing):
        raise VocabularyError(
            f"{where}: its 'class_isthing' must be {len(names)} true/false flags, one per class; "
            "write it again with train"
        )
    vocabulary = Vocabulary(tuple(names), tuple(isthing), where)
    if embeddings is None:
        return CheckpointClasses(vocabulary, None)
    return CheckpointClasses(vocabulary, _checked_vectors(embeddings, len(names), text_dim, where))


def _checked_vectors(embeddings: object, count: int, text_dim: int, where: str) -> torch.Tensor:
    """Shape, dtype and values of the stored embeddings (shape first: nothing is copied before it is known)."""
    expected = f"a [{count}, {text_dim}] float tensor (one {text_dim}-d text embedding per class)"
    if not isinstance(embeddings, torch.Tensor) or not embeddings.is_floating_point():
        raise VocabularyError(f"{where}: its '{EMBEDDINGS_KEY}' must be {expected}; write it again with train")
    if tuple(embeddings.shape) != (count, text_dim):
        raise VocabularyError(
            f"{where}: its '{EMBEDDINGS_KEY}' is {tuple(embeddings.shape)}, expected {expected}; "
            "write it again with train"
        )
    vectors = embeddings.detach().to("cpu", torch.float32, copy=True)
    norms = vectors.norm(dim=1)
    if not torch.isfinite(vectors).all() or not (norms > 0).all():
        raise VocabularyError(
            f"{where}: its '{EMBEDDINGS_KEY}' holds NaN, infinite or all-zero rows; write it again with train"
        )
    return vectors / norms[:, None]


def default_vocabulary(classes: CheckpointClasses | None) -> str:
    """The vocabulary when none is asked for: the checkpoint's own classes if it stores them, else ScanNet++."""
    return CHECKPOINT_VOCAB if classes is not None else "scannetpp"


def missing_checkpoint_classes(weights: str) -> VocabularyError:
    """The one sentence for vocabulary 'checkpoint' asked of a checkpoint that carries no classes."""
    return VocabularyError(
        f"the checkpoint {weights} carries no class list of its own (only checkpoints written by train do), "
        "so vocabulary 'checkpoint' cannot be used with it; choose scannetpp, coco, ade20k or a class file"
    )
