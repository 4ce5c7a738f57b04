"""A checkpoint made by ``train`` labels with its own classes from ``run`` to Blender; the panel can ask for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.options import parse_options

TRAINED = ("wall", "floor", "mug")  # the classes of tests/train/conftest.py's painted scenes


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(final.pth of a 2-step run on a painted scene, that scene's folder): a few seconds."""
    from panst3r_engine.eval.dataset import write_scene
    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.train.loop import Trainer
    from panst3r_engine.train.options import TrainOptions
    from tests.train.conftest import painted_scene

    root = tmp_path_factory.mktemp("trained")
    scene = write_scene(painted_scene(0, views=3), root / "scene")
    init = write_random_checkpoint(root / "tiny_v2.pth", "v2", "tiny", seed=5)
    opts = TrainOptions(
        datasets=(str(scene),),
        init=str(init),
        out=str(root / "run"),
        steps=2,
        device="cpu",
        resize="none",
        vocab_embeddings="random",  # tiny checkpoints have no text tower; the .pth stores what it was trained with
        batch_size=1,
        accum=1,
        views=2,
        num_points=64,
        warmup=1,
    )
    return Trainer(opts, log=lambda line: None).run(), scene


@pytest.mark.slow  # training, a job and an import: about 100 s on the loaded 2-core machine (CPU time about 20 s)
def test_run_then_import_labels_instances_with_the_trained_classes(addon, scene, trained, tmp_path) -> None:
    from panst3r_engine.cli import main

    final, scene_dir = trained
    photos = sorted((scene_dir / "images").iterdir())
    bundle = tmp_path / "bundle"
    args = ["run", *map(str, photos), "--weights", str(final), "--device", "cpu", "--resize", "none"]
    assert main([*args, "--conf-threshold", "1", "--out", str(bundle)]) == 0  # no --vocab: the checkpoint's own
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == list(TRAINED)
    assert manifest["segments"], "the trained decoder kept no segment"

    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    labelled = [ob for ob in scene.objects if ob.get("segment")]
    assert labelled and {ob["segment"] for ob in labelled} <= {s["id"] for s in manifest["segments"]}
    assert {ob["class"] for ob in labelled} <= set(TRAINED)
    assert all(ob.name.startswith(ob["class"]) for ob in labelled)


def test_the_panel_sends_checkpoint_and_every_vocabulary_is_one_the_engine_accepts(addon, scene) -> None:
    settings, run = scene.panst3r, addon.module("operators.run")
    items = settings.bl_rna.properties["vocab"].enum_items
    presets = [item.identifier for item in items if item.identifier != "CUSTOM"]
    assert "checkpoint" in presets and items["checkpoint"].name == "Checkpoint's Classes"
    for preset in presets:
        settings.vocab = preset
        options = parse_options(json.dumps(run._options(settings)))
        assert options.job_options(JobOptions()).vocab == preset
