"""Scene folders -> training samples: segment targets, vocabulary, view groups."""

from __future__ import annotations

import numpy as np
import pytest

from panst3r_engine.eval.dataset import DatasetError
from panst3r_engine.train.data import load_training_data, segment_targets, view_groups


def test_view_groups_are_strided_and_cover_every_view() -> None:
    assert view_groups(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert view_groups(4, 5) == [[0, 1, 2, 3]]


def test_things_keep_instances_and_stuff_merges_per_class() -> None:
    sem = np.array([[[1, 1, 2, 0], [3, 3, 3, 9]]])  # 1 wall (stuff), 2 floor (stuff), 3 mug (thing), 9 unknown
    inst = np.array([[[5, 6, 7, 0], [8, 8, 4, 1]]])  # the wall carries two instance ids
    seg, labels = segment_targets(sem, inst, {1: 0, 2: 1, 3: 2}, things={3})
    # segments: wall, floor, mug#4, mug#8 (sorted by class then instance); void and unknown -> -1
    assert labels.tolist() == [0, 1, 2, 2]
    assert seg.tolist() == [[[0, 0, 1, -1], [3, 3, 2, -1]]]


def test_samples_and_targets_from_scene_folders(painted_scenes) -> None:
    samples, vocab = load_training_data([str(p) for p in painted_scenes], views=2, resize="none")
    assert vocab.names == ("wall", "floor", "mug") and vocab.isthing == (False, False, True)
    assert len(samples) == 4  # 2 scenes x 4 views / 2 views per sample
    s = samples[0]
    assert s.images.shape == (2, 3, 48, 64) and -1 <= float(s.images.min()) and float(s.images.max()) <= 1
    targets = s.targets()
    assert targets.masks.shape == (4, 2, 48, 64)  # wall, floor, 2 mugs
    assert sorted(targets.labels.tolist()) == [0, 1, 2, 2]
    # every pixel belongs to exactly one target (no void in these scenes)
    assert bool((targets.masks.sum(0) == 1).all())


def test_resize_none_refuses_sizes_off_the_patch_grid(tmp_path) -> None:
    from panst3r_engine.eval.dataset import write_scene
    from tests.train.conftest import painted_scene

    path = write_scene(painted_scene(0, views=2, width=60, height=48), tmp_path / "odd")
    with pytest.raises(DatasetError, match="multiples of 16"):
        load_training_data([str(path)], resize="none")


def test_a_dataset_without_labels_fails_before_the_run_folder_exists(tmp_path, tiny_v2) -> None:
    from panst3r_engine.cli import main
    from panst3r_engine.eval.dataset import write_scene
    from tests.train.conftest import painted_scene

    scene = painted_scene(0, views=2)
    for view in scene.views:
        view.semantic[:] = 0  # all void
    path = write_scene(scene, tmp_path / "void")
    out = tmp_path / "run"
    assert main(["train", str(path), "--init", str(tiny_v2), "--out", str(out), "--resize", "none"]) == 2
    assert not out.exists()
