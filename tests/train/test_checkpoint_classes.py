"""A checkpoint written by train carries its classes and their embeddings; they are the default vocabulary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from panst3r_engine.cli import main
from panst3r_engine.model.checkpoints import build_model, read_checkpoint
from panst3r_engine.model.loading import ModelCache
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.options import parse_options
from panst3r_engine.vocab.checkpoint import EMBEDDINGS_KEY, CheckpointClasses, checkpoint_classes
from panst3r_engine.vocab.embeddings import random_embeddings, resolve_class_embeddings
from panst3r_engine.vocab.vocabularies import Vocabulary, VocabularyError

NAMES = ["wall", "floor", "mug"]
DIM = 8


def with_classes(source: Path, out: Path, names=NAMES, isthing=(False, False, True), embeddings="random") -> Path:
    """``source`` (an official-layout checkpoint) re-saved as train writes one: classes in args, embeddings beside."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(source, map_location="cpu", weights_only=True)
    data["args"] = argparse.Namespace(**vars(data["args"]), classes=list(names), class_isthing=list(isthing))
    if isinstance(embeddings, str):
        embeddings = random_embeddings(list(names), _text_dim(source), seed=3).vectors
    if embeddings is not None:
        data[EMBEDDINGS_KEY] = embeddings
    torch.save(data, out)
    return out


def _text_dim(checkpoint: Path) -> int:
    return build_model(read_checkpoint(checkpoint)[1].config).text_dim  # on the meta device: nothing allocated


def _classes(vectors=None, names=NAMES) -> CheckpointClasses:
    args = {"classes": list(names), "class_isthing": [False, False, True][: len(names)]}
    if vectors is None:
        vectors = random_embeddings(list(names), DIM, seed=1).vectors
    return checkpoint_classes(args, vectors, DIM, "checkpoint t.pth")


def test_valid_classes_come_back_in_order_with_unit_rows() -> None:
    classes = _classes(torch.randn(3, DIM, dtype=torch.float64) * 5)
    assert classes.vocabulary == Vocabulary(("wall", "floor", "mug"), (False, False, True), "checkpoint t.pth")
    assert classes.vectors.dtype == torch.float32 and classes.vectors.shape == (3, DIM)
    torch.testing.assert_close(classes.vectors.norm(dim=1), torch.ones(3))
    assert checkpoint_classes({}, None, DIM, "official.pth") is None  # official checkpoints: nothing
    assert checkpoint_classes({"classes": NAMES}, None, DIM, "old.pth").vectors is None  # names only: text tower


@pytest.mark.parametrize(
    ("args", "vectors", "says"),
    [
        ({"classes": NAMES}, torch.ones(2, DIM), "(2, 8), expected a [3, 8] float tensor"),
        ({"classes": NAMES}, torch.ones(3, DIM + 1), "expected a [3, 8] float tensor"),
        ({"classes": NAMES}, torch.ones(3, DIM, dtype=torch.int64), "must be a [3, 8] float tensor"),
        ({"classes": NAMES}, [[1.0] * DIM] * 3, "must be a [3, 8] float tensor"),
        ({"classes": NAMES}, torch.full((3, DIM), float("nan")), "NaN, infinite or all-zero rows"),
        ({"classes": NAMES}, torch.zeros(3, DIM), "NaN, infinite or all-zero rows"),
        ({"classes": "wall"}, None, "not a list of class names"),
        ({"classes": ["wall", "wall"]}, None, "duplicate class name 'wall'"),
        ({"classes": NAMES, "class_isthing": [True]}, None, "3 true/false flags"),
        ({}, torch.ones(3, DIM), "no class list"),
    ],
)
def test_a_damaged_class_entry_is_refused_with_one_sentence(args, vectors, says) -> None:
    with pytest.raises(VocabularyError, match="write it again with train|duplicate") as info:
        checkpoint_classes(args, vectors, DIM, "checkpoint t.pth")
    assert says in str(info.value) and str(info.value).startswith("checkpoint t.pth")


def test_the_checkpoints_classes_are_the_default_vocabulary() -> None:
    classes = _classes()
    emb = resolve_class_embeddings(None, None, DIM, checkpoint=classes)
    assert emb.names == NAMES and emb.isthing == [False, False, True]
    assert torch.equal(emb.vectors, classes.vectors)
    assert resolve_class_embeddings("checkpoint", None, DIM, checkpoint=classes).names == NAMES
    assert resolve_class_embeddings(" Checkpoint ", "random", DIM, checkpoint=classes).names == NAMES
    # without classes of its own the default stays ScanNet++
    assert len(resolve_class_embeddings(None, "random", DIM)) == 100


def test_a_vocabulary_of_the_checkpoints_names_uses_its_stored_embeddings(tmp_path) -> None:
    # eval run passes the scene's classes as a file: the checkpoint's rows, reordered, no text tower needed
    (tmp_path / "scene.txt").write_text("mug\nwall;stuff\n", encoding="utf-8")
    classes = _classes()
    emb = resolve_class_embeddings(str(tmp_path / "scene.txt"), None, DIM, checkpoint=classes)
    assert emb.names == ["mug", "wall"] and emb.isthing == [True, False]
    assert torch.equal(emb.vectors, classes.vectors[[2, 0]])


def test_checkpoint_vocabulary_of_an_official_checkpoint_says_what_to_do() -> None:
    with pytest.raises(VocabularyError) as info:
        resolve_class_embeddings("checkpoint", "random", DIM, weights="panst3r_v2.pth")
    message = str(info.value)
    assert "panst3r_v2.pth carries no class list" in message and "choose scannetpp, coco, ade20k" in message


def test_the_service_accepts_checkpoint_as_a_preset_name() -> None:
    options = parse_options(json.dumps({"vocab": "checkpoint"}))
    assert options.vocab_names is None and options.job_options(JobOptions()).vocab == "checkpoint"
    assert parse_options(json.dumps({})).job_options(JobOptions()).vocab is None  # the engine decides
    with pytest.raises(ApiError, match="scannetpp, coco, ade20k, checkpoint"):
        parse_options(json.dumps({"vocab": "checkpoints"}))


def test_loading_validates_the_stored_embeddings(tiny_v2, tmp_path) -> None:
    good = with_classes(tiny_v2, tmp_path / "good.pth")
    loaded = ModelCache().get(str(good), "cpu")
    assert loaded.classes.vocabulary.names == tuple(NAMES)
    assert ModelCache().get(str(tiny_v2), "cpu").classes is None
    bad = with_classes(tiny_v2, tmp_path / "bad.pth", embeddings=torch.ones(2, 4))
    with pytest.raises(VocabularyError, match=r"checkpoint bad.pth: its 'class_embeddings' is \(2, 4\)"):
        ModelCache().get(str(bad), "cpu")


def _run(photos: list[Path], weights: Path, out: Path, *extra: str) -> int:
    args = ["run", *map(str, photos), "--weights", str(weights), "--device", "cpu", "--resize", "none"]
    return main([*args, "--out", str(out), *extra])


def test_run_labels_with_the_checkpoints_classes_by_default(tiny_v2, painted_scenes, tmp_path, capsys) -> None:
    trained = with_classes(tiny_v2, tmp_path / "trained.pth")
    photos = sorted((painted_scenes[0] / "images").iterdir())[:2]
    assert _run(photos, trained, tmp_path / "bundle") == 0
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["options"]["vocab"] == "checkpoint"  # the vocabulary used, not null
    classes = [(c["name"], c["isthing"]) for c in manifest["classes"]]
    assert classes == [("wall", False), ("floor", False), ("mug", True)]
    # asked of an official checkpoint, 'checkpoint' fails before anything is written
    assert _run(photos, tiny_v2, tmp_path / "official", "--vocab", "checkpoint") == 2
    assert "carries no class list of its own" in capsys.readouterr().err
    assert not (tmp_path / "official").exists()


def test_fine_tuning_a_trained_checkpoint_again_reuses_its_stored_embeddings(tiny_v2, painted_scenes, tmp_path) -> None:
    from panst3r_engine.train.loop import Trainer
    from panst3r_engine.train.options import TrainOptions

    names = ["mug", "floor", "wall"]  # another order than the datasets' wall, floor, mug
    stored = random_embeddings(names, _text_dim(tiny_v2), seed=9).vectors
    trained = with_classes(tiny_v2, tmp_path / "trained.pth", names, (True, False, False), stored)
    opts = TrainOptions(
        datasets=(str(painted_scenes[0]),),
        init=str(trained),
        out=str(tmp_path / "again"),
        steps=1,
        device="cpu",
        resize="none",
        views=2,
        use_cache=False,
    )  # no --vocab-embeddings and no text tower needed
    trainer = Trainer(opts, log=lambda line: None)
    trainer.setup()
    assert trainer.text.names == NAMES
    torch.testing.assert_close(trainer.text.vectors, stored[[2, 1, 0]])
