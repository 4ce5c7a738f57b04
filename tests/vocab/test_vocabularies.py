"""Vocabularies and the embedding cache (no transformers needed); colours are in test_colors.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from panst3r_engine.vocab import embeddings, text_encoder, vocabularies
from panst3r_engine.vocab.embeddings import (
    TEXT_MODEL_ID,
    ClassEmbeddings,
    embeddings_for,
    load_embeddings,
    random_embeddings,
    resolve_class_embeddings,
)
from panst3r_engine.vocab.vocabularies import PRESETS, Vocabulary, VocabularyError, load_vocabulary, merge_vocabularies

# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("preset, count, things", [("scannetpp", 100, 84), ("coco", 133, 80), ("ade20k", 150, 100)])
def test_preset_sizes(preset, count, things):
    v = load_vocabulary(preset)
    assert len(v) == count and len(v.isthing) == count and sum(v.isthing) == things
    assert v.source == preset


def test_preset_order_and_exact_names():
    scannet, coco, ade = (load_vocabulary(p) for p in PRESETS)
    assert scannet.names[:6] == ("wall", "ceiling", "floor", "table", "door", "ceiling lamp")
    assert scannet.names[-1] == "marker" and not scannet.isthing[0] and scannet.isthing[3]
    assert coco.names[0] == "person" and coco.names[79] == "toothbrush" and coco.names[80] == "banner"
    assert coco.names[-2:] == ("wall-other-merged", "rug-merged") and not coco.isthing[-1]
    assert ade.names[8] == "window " and "basket, handbasket" in ade.names and ade.names[-1] == "flag"


def test_union_of_presets_matches_official_count():
    """The reference notes count 316 unique strings in the union of the demo's three lists."""
    names = set().union(*(load_vocabulary(p).names for p in PRESETS))
    assert len(names) == 316


@pytest.mark.parametrize("alias", ["scannet", "ScanNet", " scannetpp "])
def test_preset_aliases(alias):
    assert load_vocabulary(alias).names == load_vocabulary("scannetpp").names


# ---------------------------------------------------------------- user files


def test_text_file_with_comments_and_stuff(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nchair\n\n  wall ;stuff  # a comment\nlamp;thing\nbasket, handbasket\n")
    v = load_vocabulary(path)
    assert v.names == ("chair", "wall", "lamp", "basket, handbasket")
    assert v.isthing == (True, False, True, True)


def test_json_file_names_and_objects(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["chair", "window "]))
    (tmp_path / "b.json").write_text(json.dumps([{"name": "floor", "isthing": False}, {"name": "cup"}]))
    assert load_vocabulary(tmp_path / "a.json").names == ("chair", "window ")
    b = load_vocabulary(str(tmp_path / "b.json"))
    assert b.names == ("floor", "cup") and b.isthing == (False, True)


@pytest.mark.parametrize(
    "content, message",
    [
        ("chair\ntable\nchair\n", "duplicate class name 'chair'"),
        ("# nothing\n\n", "empty"),
    ],
)
def test_invalid_text_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(VocabularyError, match=message):
        load_vocabulary(path)


def test_invalid_json_and_missing_and_too_many(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps(["chair", "  "]))
    with pytest.raises(VocabularyError, match="empty name"):
        load_vocabulary(tmp_path / "e.json")
    (tmp_path / "n.json").write_text("{not json")
    with pytest.raises(VocabularyError, match="not valid JSON"):
        load_vocabulary(tmp_path / "n.json")
    with pytest.raises(VocabularyError, match="neither a preset"):
        load_vocabulary(tmp_path / "missing.txt")
    (tmp_path / "big.txt").write_text("\n".join(f"class {i}" for i in range(vocabularies.MAX_CLASSES + 1)))
    with pytest.raises(VocabularyError, match="more than"):
        load_vocabulary(tmp_path / "big.txt")


def test_merge_keeps_first_occurrence_order():
    a = Vocabulary(("wall", "chair"), (False, True), "a")
    b = Vocabulary(("chair", "lamp"), (False, True), "b")
    m = merge_vocabularies([a, b])
    assert m.names == ("wall", "chair", "lamp") and m.isthing == (False, True, True) and m.source == "a+b"


# ---------------------------------------------------------------- embeddings and cache


def test_random_embeddings_are_seeded_unit_vectors():
    a, b = random_embeddings(["x", "y", "z"], 16, seed=3), random_embeddings(["x", "y", "z"], 16, seed=3)
    assert torch.equal(a.vectors, b.vectors) and a.names == ["x", "y", "z"]
    assert torch.allclose(a.vectors.norm(dim=1), torch.ones(3))


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A text-model folder with dummy files, and compute_embeddings replaced by a counting fake."""
    model_dir = tmp_path / "siglip"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(bytes(range(256)) * 40000)  # > 8 MiB: sampled digest
    calls = []

    def fake_compute(names, model_dir, device="cpu", batch_size=32):
        calls.append(list(names))
        return random_embeddings(names, 8, seed=len(calls)).vectors

    monkeypatch.setattr(text_encoder, "compute_embeddings", fake_compute)
    return model_dir, calls


def test_cache_computes_once_then_reuses(tmp_path, fake_model):
    model_dir, calls = fake_model
    v = load_vocabulary("coco")
    first = embeddings_for(v, model_dir, cache_dir=tmp_path / "cache")
    again = embeddings_for(v, model_dir, cache_dir=tmp_path / "cache")
    offline = embeddings_for(v, None, cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and first.names == list(v.names) and first.isthing == list(v.isthing)
    assert torch.equal(first.vectors, again.vectors) and torch.equal(first.vectors, offline.vectors)
    files = list((tmp_path / "cache" / "embeddings").iterdir())
    assert [f.suffix for f in files] == [".npz"] and not any(f.name.startswith(".tmp") for f in files)
    assert load_embeddings(files[0]).names == list(v.names)  # usable as --vocab-embeddings


def test_cache_key_depends_on_names_order_and_model(tmp_path, fake_model):
    model_dir, calls = fake_model
    cache = tmp_path / "cache"
    embeddings_for(Vocabulary(("a", "b"), (True, True)), model_dir, cache_dir=cache)
    embeddings_for(Vocabulary(("b", "a"), (True, True)), model_dir, cache_dir=cache)
    embeddings_for(Vocabulary(("a", "b "), (True, True)), model_dir, cache_dir=cache)
    assert len(calls) == 3
    with (model_dir / "model.safetensors").open("r+b") as f:  # other weights: the entry must not be trusted
        f.seek(-1, 2)
        f.write(b"\x00")
    embeddings_for(Vocabulary(("a", "b"), (True, True)), model_dir, cache_dir=cache)
    assert len(calls) == 4


def test_no_model_no_cache_says_what_to_do(tmp_path):
    with pytest.raises(VocabularyError) as err:
        embeddings_for(load_vocabulary("scannet"), None, cache_dir=tmp_path)
    text = str(err.value)
    assert TEXT_MODEL_ID in text and "weights download siglip-text" in text and "--vocab-embeddings" in text
    with pytest.raises(VocabularyError, match="no text model at"):
        embeddings_for(load_vocabulary("scannet"), tmp_path / "nowhere", cache_dir=tmp_path)


def test_cache_dir_follows_panst3r_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PANST3R_HOME", str(tmp_path / "home"))
    assert embeddings.embeddings_cache_dir() == tmp_path / "home" / "embeddings"


def test_resolve_random_file_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PANST3R_HOME", str(tmp_path / "home"))
    emb = resolve_class_embeddings("coco", "random", 32, seed=1)
    assert emb.vectors.shape == (133, 32) and emb.isthing == list(load_vocabulary("coco").isthing)
    path = tmp_path / "e.npz"
    embeddings.save_embeddings(path, ["wall", "cup"], np.eye(2, 32, dtype=np.float32))
    loaded = resolve_class_embeddings("scannetpp", str(path), 32)
    assert loaded.names == ["wall", "cup"] and loaded.isthing == [False, True]
    with pytest.raises(VocabularyError, match="siglip-text"):
        resolve_class_embeddings("scannetpp", None, 768)


def test_engine_works_without_transformers(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(VocabularyError, match="panst3r-engine\\[text\\]"):
        text_encoder.compute_embeddings(["chair"], tmp_path)


def test_class_embeddings_keeps_two_argument_form():
    emb = ClassEmbeddings(["a"], torch.ones(1, 4))
    assert emb.isthing is None and len(emb) == 1
