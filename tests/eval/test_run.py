"""The ``eval`` commands end to end (Blender scene + tiny random checkpoint), and the driver's small parts.

Random weights make low scores expected: these tests check structure, ranges
and that both protocols run, never quality.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.cli import main
from panst3r_engine.errors import OptionsError
from panst3r_engine.eval.cli import to_json
from panst3r_engine.eval.dataset import ClassInfo, DatasetError, SceneDataset, read_scene
from panst3r_engine.eval.run import (
    EvalOptions,
    prediction_from_bundle,
    processing_frame,
    split_views,
    vocabulary_lines,
    zbuffer_labels,
)

needs_bpy = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None,
    reason="bpy (Blender as a module, pip install bpy==5.0.1, Python 3.11) is not installed",
)
VIEWS = 5


# --------------------------------------------------------------------------- no Blender needed


def test_missing_dataset_exits_2_with_a_sentence(tmp_path: Path, capsys) -> None:
    code = main(["eval", "run", str(tmp_path / "nope"), "--weights", "v2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "nope" in err
    assert not (tmp_path / "o").exists()


def test_folder_that_is_no_scene_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["eval", "run", str(tmp_path), "--weights", "v2", "--out", str(tmp_path / "o")])
    assert code == 2 and "neither a scene folder" in capsys.readouterr().err


def test_split_views_holds_out_every_kth_from_zero() -> None:
    assert split_views(6, 4) == ([1, 2, 3, 5], [0, 4])
    assert split_views(5, 4, ["b", "d"], list("abcde")) == ([0, 2, 4], [1, 3])
    with pytest.raises(DatasetError, match="need >= 2 input"):
        split_views(2, 2)
    with pytest.raises(OptionsError, match="holdout_every"):
        EvalOptions(holdout_every=1).validate()


def test_panoptic_lifting_folder_holds_out_its_test_split(tmp_path: Path) -> None:
    from panst3r_engine.eval.run import load_dataset
    from tests.eval.test_dataset import _panlift_folder

    _panlift_folder(tmp_path)  # frames 0, 5, 10 (no finite pose), 15; test split 5 and 10
    scene, test = load_dataset(tmp_path)
    assert [v.stem for v in scene.views] == ["0", "5", "15"] and test == ["5"]
    assert split_views(3, 4, test, [v.stem for v in scene.views]) == ([0, 2], [1])


def test_engine_cli_dispatches_the_eval_group(capsys) -> None:
    import argparse

    from panst3r_engine import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "eval" not in sub.choices:
        pytest.skip("panst3r_engine.cli does not call add_eval_commands yet")
    assert cli.main(["eval", "run", "/nonexistent/scene", "--weights", "v2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_vocabulary_marks_stuff_and_rejects_reserved_characters() -> None:
    scene = SceneDataset([ClassInfo(1, "wall", False), ClassInfo(2, "table lamp", True)], [], [])
    assert vocabulary_lines(scene) == "wall;stuff\ntable lamp\n"
    with pytest.raises(DatasetError, match="reserved"):
        vocabulary_lines(SceneDataset([ClassInfo(1, "a#b", True)], [], []))


def test_zbuffer_footprint_hides_far_points_seen_through_gaps() -> None:
    """A sparse near plane (every other pixel) in front of a dense far one: the footprint closes the gaps."""
    K = np.array([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]])
    rows, cols = np.mgrid[0:16, 0:16].astype(float)
    rays = np.stack([(cols - 8) / 10, (rows - 8) / 10, np.ones_like(cols)], -1)
    far, near = (rays * 5.0).reshape(-1, 3), (rays * 2.0)[::2, ::2].reshape(-1, 3)
    xyz = np.concatenate([far, near])
    ids = np.concatenate([np.full(len(far), 1), np.full(len(near), 2)])
    leaky = zbuffer_labels(xyz, ids, K, np.eye(4), (16, 16), point_radius=0, fill_radius=0)
    closed = zbuffer_labels(xyz, ids, K, np.eye(4), (16, 16), point_radius=1, fill_radius=0)
    assert (leaky == 1).mean() == pytest.approx(0.75) and (closed == 2).all()
    holes = zbuffer_labels(near, np.full(len(near), 2), K, np.eye(4), (16, 16), point_radius=0, fill_radius=1.5)
    assert (holes == 2).all()


def test_report_json_is_strict() -> None:
    out = to_json({"a": float("nan"), 3: np.float32(0.5), "t": (np.int64(2), np.array([1.0, np.inf]))})
    assert out == {"a": None, "3": 0.5, "t": [2, [1.0, None]]}
    json.dumps(out, allow_nan=False)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-view 128x96 room rendered through ``eval make-scene --fast``."""
    try:
        import bpy  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"bpy does not import: {exc}")
    out = tmp_path_factory.mktemp("evalscene") / "room"
    assert (
        main(
            [
                "eval",
                "make-scene",
                str(out),
                "--seed",
                "2",
                "--views",
                str(VIEWS),
                "--width",
                "128",
                "--height",
                "96",
                "--fast",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from panst3r_engine.model.checkpoints import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_v2.pth", "v2", "tiny", seed=5)


def _run(scene_dir: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "eval",
            "run",
            str(scene_dir),
            "--weights",
            str(checkpoint),
            "--vocab-embeddings",
            "random",
            "--device",
            "cpu",
            "--resize",
            "none",
            "--conf-threshold",
            "1",
            "--max-points",
            "20000",
            "--out",
            str(out),
            *extra,
        ]
    )


def _in_unit(x) -> bool:
    return x is None or 0.0 <= x <= 1.0


def _check_panoptic(pan: dict, n_views: int) -> None:
    for key in ("pq", "pq_th", "pq_st", "sq", "rq", "miou", "pq_image_wise"):
        assert key in pan and _in_unit(pan[key]), (key, pan.get(key))
    # The filtered PQ is null when no class survives the 0.5 % filter (likely with random weights).
    assert pan["unfiltered"]["pq"] is not None and pan["miou"] is not None
    assert len(pan["per_view_pq"]) == n_views and all(_in_unit(v) for v in pan["per_view_pq"])
    assert _in_unit(pan["unfiltered"]["pq"])
    for c in pan["per_class"].values():
        assert _in_unit(c["pq"]) and c["tp"] >= 0 and c["fp"] >= 0 and c["fn"] >= 0


def _check_geometry(geo: dict, n_inputs: int) -> None:
    cams = geo["cameras"]
    assert len(cams["rot_err_deg"]) == n_inputs and all(0 <= e <= 180 for e in cams["rot_err_deg"])
    assert 0 <= cams["rot_err_deg_mean"] <= 180 and cams["trans_err_mean"] >= 0
    assert cams["alignment_from"] in ("camera_centres", "points")
    assert len(geo["focal"]["relative"]) == n_inputs and geo["focal"]["mean"] >= 0
    assert min(geo["focal"]["gt"]) > 0
    pts = geo["points"]
    assert pts["points"] > 0 and pts["correspondences"] > 0 and pts["scale"] > 0
    assert all(pts[k] >= 0 and math.isfinite(pts[k]) for k in ("accuracy", "completeness", "chamfer"))


@needs_bpy
def test_eval_input_views(scene_dir: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    assert _run(scene_dir, checkpoint, tmp_path / "e") == 0
    printed = capsys.readouterr().out
    assert "PQ_th" in printed and "cameras" in printed
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["protocol"] == "input-views" and report["views"]["held_out"] == []
    assert report["views"]["input"] == [f"view_{i:03d}" for i in range(VIEWS)]
    assert report["panoptic"]["label_source"] == "panoptic_maps" and "panoptic_input_views" not in report
    _check_panoptic(report["panoptic"], VIEWS)
    _check_geometry(report["geometry"], VIEWS)
    manifest = json.loads((tmp_path / "e" / "bundle" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == [c["name"] for c in report["classes"].values()]
    bundle, scene = read_bundle(tmp_path / "e" / "bundle"), read_scene(scene_dir)
    pred, name_of = prediction_from_bundle(bundle, scene), {c.id: c.name for c in scene.classes}
    for seg in manifest["segments"]:  # bundle class index c is dataset class c + 1, matched by name
        assert name_of[int(pred.seg_class[seg["id"]])] == manifest["classes"][seg["class_id"]]["name"]
    for im in manifest["images"]:  # the held-out protocol recomputes this frame; it must match the loader's
        w, h = im["original_size"]
        assert processing_frame(w, h, "none") == (tuple(im["crop_box"]), tuple(im["processed_size"]))


@needs_bpy
def test_eval_held_out(scene_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    json_path = tmp_path / "numbers" / "held.json"
    assert _run(scene_dir, checkpoint, tmp_path / "e", "--protocol", "held-out", "--json", str(json_path)) == 0
    report = json.loads(json_path.read_text())
    assert report["views"] == {"input": ["view_001", "view_002", "view_003"], "held_out": ["view_000", "view_004"]}
    assert report["panoptic"]["label_source"] == "points"
    _check_panoptic(report["panoptic"], 2)
    _check_panoptic(report["panoptic_input_views"], 3)
    _check_geometry(report["geometry"], 3)
    assert len(json.loads((tmp_path / "e" / "bundle" / "manifest.json").read_text())["images"]) == 3


@needs_bpy
def test_existing_bundle_needs_overwrite(scene_dir: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "e" / "bundle").mkdir(parents=True)
    (tmp_path / "e" / "bundle" / "keep.txt").write_text("x")
    assert _run(scene_dir, checkpoint, tmp_path / "e") == 2
    assert "already exists" in capsys.readouterr().err
