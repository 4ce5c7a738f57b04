"""Fine-tuning works: held-out PQ^scene and mIoU rise above the untrained decoder and a majority baseline.

Rendered rooms (Blender, ``eval make-scene --fast``), a tiny random checkpoint, a short run on CPU;
the scores come from ``eval run``'s own code (:mod:`panst3r_engine.train.evaluate`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SCENES, HELD_OUT, VIEWS, WIDTH, HEIGHT = 6, 2, 4, 64, 48
STEPS = 40


@pytest.fixture(scope="session")
def rendered_rooms(tmp_path_factory) -> list[Path]:
    """Six seeded 4-view 64x48 rooms (about 5 s each), rendered once per session."""
    try:
        import bpy  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy does not import: {exc}")
    from panst3r_engine.eval.synthetic import generate_scene

    root = tmp_path_factory.mktemp("rooms")
    return [
        generate_scene(root / f"room_{i}", seed=100 + i, num_views=VIEWS, width=WIDTH, height=HEIGHT, fast=True)
        for i in range(SCENES)
    ]


@pytest.mark.slow
def test_training_beats_the_untrained_decoder_and_the_majority_class(rendered_rooms, tmp_path) -> None:
    from benchmarks.bench_train import experiment

    result = experiment(rendered_rooms, HELD_OUT, tmp_path, steps=STEPS, lr=1e-3, log=lambda line: None, timing=False)
    rows = list(result["rows"].values())
    majority, before, after = rows
    assert after["pq_all"] > before["pq_all"] + 0.05, rows
    assert after["pq_all"] > majority["pq_all"], rows
    assert after["miou"] > before["miou"] + 0.05 and after["miou"] > majority["miou"], rows
