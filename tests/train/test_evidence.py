"""Training on rendered rooms: the loss falls on the same samples, and ``eval run``'s scoring reads the result.

Rendered rooms (Blender, ``eval make-scene --fast``), a tiny random checkpoint, a short CPU run.
A held-out PQ gain needs far more steps than CI affords on 2 cores; ``benchmarks/bench_train.py``
measures it (README, "Training your own classes").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

HELD_OUT = 2
PASSES = 3


@pytest.mark.slow
def test_loss_falls_on_rendered_rooms_and_the_result_is_scored(rendered_rooms, tmp_path) -> None:
    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.train.evaluate import evaluate_checkpoint, majority_baseline
    from panst3r_engine.train.loop import Trainer
    from panst3r_engine.train.options import TrainOptions

    train, held = rendered_rooms[:-HELD_OUT], rendered_rooms[-HELD_OUT:]
    samples = len(train) * 2  # 4 views per room, 2 views per sample
    opts = TrainOptions(
        datasets=tuple(map(str, train)),
        init=str(write_random_checkpoint(tmp_path / "tiny.pth", "v2", "tiny", seed=5)),
        out=str(tmp_path / "run"),
        steps=PASSES * samples,
        device="cpu",
        resize="none",
        vocab_embeddings="random",
        lr=1e-3,
        batch_size=1,
        accum=1,
        views=2,
        num_points=512,
        save_every=1000,
    )
    final = Trainer(opts, log=lambda line: None).run()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = np.mean(losses[:samples]), np.mean(losses[-samples:])  # each pass visits every sample once
    assert last < 0.9 * first, (first, last)

    scores = evaluate_checkpoint(final, held, str(tmp_path / "run" / "classes.npz"), tmp_path / "eval")
    majority = majority_baseline([read_scene(p) for p in train], [read_scene(p) for p in held])
    for row in (scores, majority):
        assert row["miou"] is not None and 0.0 <= row["miou"] <= 1.0
        assert row["pq_all"] is not None and 0.0 <= row["pq_all"] <= 1.0
