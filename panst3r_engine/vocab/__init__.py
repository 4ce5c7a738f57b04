"""Class vocabularies, their text embeddings and their colours.

- :mod:`.vocabularies`: presets (ScanNet++, COCO, ADE20k, official order) and user lists
- :mod:`.embeddings`: ``.npz`` files, the on-disk cache, the job's embeddings
- :mod:`.checkpoint`: the classes and embeddings a checkpoint made by ``train`` stores
- :mod:`.text_encoder`: the SigLIP text tower (optional ``transformers``)
- :mod:`.colors`: the one place class and segment colours are decided
"""

from panst3r_engine.vocab.colors import class_colors, instance_color
from panst3r_engine.vocab.embeddings import (
    ClassEmbeddings,
    cache_embeddings,
    embeddings_for,
    load_embeddings,
    random_embeddings,
    resolve_class_embeddings,
    save_embeddings,
)
from panst3r_engine.vocab.vocabularies import PRESETS, Vocabulary, VocabularyError, load_vocabulary

__all__ = [
    "PRESETS",
    "ClassEmbeddings",
    "Vocabulary",
    "VocabularyError",
    "cache_embeddings",
    "class_colors",
    "embeddings_for",
    "instance_color",
    "load_embeddings",
    "load_vocabulary",
    "random_embeddings",
    "resolve_class_embeddings",
    "save_embeddings",
]
