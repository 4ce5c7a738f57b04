"""Class embeddings for the training vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panst3r_engine.train.loop import TrainError, class_embeddings
from panst3r_engine.vocab.embeddings import save_embeddings
from panst3r_engine.vocab.vocabularies import Vocabulary

VOCAB = Vocabulary(("wall", "mug"), (False, True), "test")


def test_random_embeddings_are_seeded_unit_vectors() -> None:
    a = class_embeddings(VOCAB, "random", 8, seed=3)
    b = class_embeddings(VOCAB, "random", 8, seed=3)
    assert a.names == ["wall", "mug"] and a.isthing == [False, True]
    assert torch.equal(a.vectors, b.vectors)
    torch.testing.assert_close(a.vectors.norm(dim=1), torch.ones(2))


def test_npz_rows_follow_the_vocabulary_order(tmp_path) -> None:
    vectors = np.eye(3, 4, dtype=np.float32)
    path = save_embeddings(tmp_path / "e.npz", ["mug", "lamp", "wall"], vectors)
    emb = class_embeddings(VOCAB, str(path), 4, seed=0)
    assert torch.equal(emb.vectors, torch.from_numpy(vectors[[2, 0]]))


def test_npz_missing_a_class_is_refused(tmp_path) -> None:
    path = save_embeddings(tmp_path / "e.npz", ["wall"], np.ones((1, 4), np.float32))
    with pytest.raises(TrainError, match="no embedding for the classes"):
        class_embeddings(VOCAB, str(path), 4, seed=0)
