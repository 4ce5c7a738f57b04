"""Oracle: a ground-truth bundle of a rendered synthetic room imports as one object per instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_ground_truth_bundle_gives_one_object_per_instance(addon, scene, tmp_path: Path) -> None:
    import subprocess
    import sys

    import pytest

    if addon.bpy.app.version < (5, 0, 0):
        pytest.skip("the synthetic scene generator targets Blender 5.0 (bpy==5.0.1); the add-on itself supports 4.2+")

    from panst3r_engine.eval.dataset import read_scene
    from panst3r_engine.eval.ground_truth import bundle_from_scene

    # The generator resets Blender's state, so it renders in its own process.
    folder = tmp_path / "room"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "panst3r_engine.eval.synthetic",
            str(folder),
            "--seed",
            "3",
            "--views",
            "3",
            "--width",
            "64",
            "--height",
            "48",
            "--fast",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    truth = read_scene(folder)
    bundle = bundle_from_scene(truth, None, tmp_path / "gt_bundle", stride=1)
    visible = set(np.unique(np.concatenate([v.instance.ravel() for v in truth.views])).tolist()) - {0}

    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle)) == {"FINISHED"}
    objects = [ob for ob in scene.objects if "segment" in ob and ob["segment"] != 0]
    assert sorted(ob["segment"] for ob in objects) == sorted(visible)
    class_of = {i.id: i.class_id for i in truth.instances}
    names = {c.id: c.name for c in truth.classes}
    for ob in objects:
        assert ob["class"] == names[class_of[ob["segment"]]]
        assert ob["point_count"] == sum(int((v.instance == ob["segment"]).sum()) for v in truth.views)
    assert len([ob for ob in scene.objects if ob.type == "CAMERA"]) == len(truth.views)
