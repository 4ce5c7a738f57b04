"""The training loop end to end on a tiny checkpoint: resume = uninterrupted, frozen parts stay, the result runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from panst3r_engine.cli import main
from panst3r_engine.model.checkpoints import load_model, read_checkpoint
from panst3r_engine.train.loop import StepLog, Trainer, batch_slots, progress_line, sample_at
from panst3r_engine.train.options import TrainOptions
from panst3r_engine.vocab.embeddings import load_embeddings

STEPS = 4

# Tests that train (about a minute on a loaded 2-core machine in all) run in the slow lane.
slow = pytest.mark.slow


def _options(scenes: list[Path], checkpoint: Path, out: Path, cache: Path) -> TrainOptions:
    return TrainOptions(
        datasets=tuple(str(p) for p in scenes),
        init=str(checkpoint),
        out=str(out),
        steps=STEPS,
        device="cpu",
        resize="none",
        vocab_embeddings="random",
        batch_size=1,
        accum=1,
        views=2,
        num_points=128,
        save_every=2,
        warmup=1,
        cache_dir=str(cache),
    )


@pytest.fixture(scope="module")
def straight_run(painted_scenes, tiny_v2, tmp_path_factory) -> tuple[TrainOptions, Path]:
    root = tmp_path_factory.mktemp("runs")
    opts = _options(painted_scenes, tiny_v2, root / "straight", root / "cache")
    return opts, Trainer(opts, log=lambda line: None).run()


@slow
def test_uninterrupted_run_writes_the_run_folder(straight_run) -> None:
    opts, final = straight_run
    out = Path(opts.out)
    for name in ("final.pth", "last.pth", "classes.txt", "classes.npz", "log.jsonl", "log.csv", "loss.png"):
        assert (out / name).is_file(), name
    assert len((out / "log.jsonl").read_text().splitlines()) == STEPS
    assert (out / "classes.txt").read_text() == "wall;stuff\nfloor;stuff\nmug\n"


@slow
def test_only_the_panoptic_decoder_changes(straight_run, tiny_v2) -> None:
    _, final = straight_run
    before, _ = read_checkpoint(tiny_v2)
    after, info = read_checkpoint(final)
    assert info.epoch == STEPS and info.args["classes"] == ["wall", "floor", "mug"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("panoptic_decoder.") for k in changed)
    assert any(k.startswith("panoptic_decoder.mask_transformer.") for k in changed)


@slow
def test_resume_matches_the_uninterrupted_run(straight_run, tmp_path) -> None:
    opts, final = straight_run
    split = replace(opts, out=str(tmp_path / "split"))
    assert Trainer(split, log=lambda line: None).run(stop_after=STEPS // 2) is None
    assert not (tmp_path / "split" / "final.pth").exists()
    lines: list[str] = []
    resumed = Trainer(replace(split, resume=True), log=lines.append).run()
    assert any("resumed" in line for line in lines)
    assert any("0 computed" in line for line in lines)  # the shared feature cache served every sample
    straight, _ = read_checkpoint(final)
    again, _ = read_checkpoint(resumed)
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    assert len((tmp_path / "split" / "log.jsonl").read_text().splitlines()) == STEPS


@slow
def test_trained_checkpoint_runs_through_the_pipeline(straight_run, painted_scenes, tmp_path) -> None:
    opts, final = straight_run
    model, info = load_model(final)  # strict load with the engine's loader
    assert info.config.version == "v2"
    stored = load_embeddings(Path(opts.out) / "classes.npz")
    torch.testing.assert_close(info.class_embeddings, stored.vectors)  # the .pth is self-contained
    photos = sorted((painted_scenes[0] / "images").iterdir())[:3]
    args = ["run", *map(str, photos), "--weights", str(final), "--device", "cpu", "--resize", "none"]
    assert main([*args, "--out", str(tmp_path / "bundle")]) == 0  # no --vocab: the checkpoint's own classes
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == ["wall", "floor", "mug"]


@slow
def test_existing_run_needs_resume_and_resume_needs_a_run(straight_run, tmp_path, capsys) -> None:
    opts, _ = straight_run
    base = ["train", *opts.datasets, "--init", opts.init, "--device", "cpu", "--vocab-embeddings", "random"]
    assert main([*base, "--out", opts.out]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_processes_share_out_the_samples_of_a_larger_batch() -> None:
    # 2 processes x batch 1 take the stream positions of 1 process x batch 2, step after step.
    for step in range(3):
        two = batch_slots(step, 0, 1, 1, 0, 2) + batch_slots(step, 0, 1, 1, 1, 2)
        assert two == batch_slots(step, 0, 1, 2, 0, 1)
    # each pass over the data visits every sample once, in a seeded order
    assert sorted(sample_at(i, 5, seed=7) for i in range(5, 10)) == list(range(5))
    assert [sample_at(i, 5, 7) for i in range(5)] == [sample_at(i, 5, 7) for i in range(5)]


def test_progress_line_shows_loss_terms_lr_rate_and_eta() -> None:
    line = progress_line(StepLog(10, 3.5, 1.25, 0.1, 0.5, 1e-4, 0.5), total=110, steps_per_s=2.0)
    assert line == (
        "step 10/110  loss 3.5000 (class 1.2500 mask 0.1000 dice 0.5000)  lr 1.00e-04  2.00 steps/s  ETA 0m50s"
    )


@slow
def test_validation_keeps_the_best_checkpoint_and_logs_its_scores(rendered_rooms, tmp_path) -> None:
    from panst3r_engine.model.checkpoints import write_random_checkpoint

    opts = TrainOptions(
        datasets=(str(rendered_rooms[0]),),
        init=str(write_random_checkpoint(tmp_path / "tiny.pth", "v2", "tiny", seed=5)),
        out=str(tmp_path / "run"),
        steps=2,
        device="cpu",
        resize="none",
        vocab_embeddings="random",
        batch_size=1,
        accum=1,
        num_points=64,
        val=(str(rendered_rooms[-1]),),
        val_every=1,
    )
    lines: list[str] = []
    Trainer(opts, log=lines.append).run()
    assert sum("validation at step" in line for line in lines) == 2
    assert (tmp_path / "run" / "best.pth").is_file() and not (tmp_path / "run" / "validation.pth").exists()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, r.split(","))) for r in rows[1:]]
    assert all(0.0 <= float(v["val_miou"]) <= 1.0 for v in values)
    load_model(tmp_path / "run" / "best.pth")
