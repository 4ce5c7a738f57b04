"""Run from the panel in real Blender: photos -> engine subprocess -> JobManager polling -> import.

Timers never fire in background mode, so the tests call the timer's callback (``operators.run.tick``) in a
loop, as Blender would every 0.5 s. Two engines: the API stand-in
(tests/blender/fake_engine.py, always) and the real ``python -m panst3r_engine serve`` with a tiny random
checkpoint (when the engine's service is present).
"""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.bundle.read import read_bundle

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_engine.py"


def _photos(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        y, x = np.mgrid[0:96, 0:128]
        rgb = np.stack([(x * 2 + 20 * i) % 256, (y * 2) % 256, np.full_like(x, 100 + 30 * i)], -1).astype(np.uint8)
        paths.append(folder / f"photo_{i}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def _drive(addon, timeout: float) -> list[dict]:
    """Call the GUI timer's callback until it stops (it imports the result then); returns the states seen."""
    manager, tick, seen = addon.module("runtime").manager, addon.module("operators.run").tick, []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(manager.poll())
        if tick() is None:  # the job ended and was handled (imported, or its error reported)
            seen.append(manager.poll())
            return seen
        time.sleep(0.1)
    manager.cancel()
    raise AssertionError(f"the job did not finish in {timeout} s: {seen[-1]}")


@pytest.fixture
def prefs(addon):
    """The add-on preferences, restored after the test; the engine is stopped afterwards."""
    prefs = addon.preferences
    saved = {
        name: getattr(prefs, name)
        for name in ("engine_mode", "python_path", "weights", "weights_path", "device", "startup_timeout")
    }
    yield prefs
    addon.module("runtime").host.stop()
    for name, value in saved.items():
        setattr(prefs, name, value)


def _add_photos(bpy, photos: list[Path]) -> None:
    result = bpy.ops.panst3r.add_photos(directory=str(photos[0].parent), files=[{"name": p.name} for p in photos])
    assert result == {"FINISHED"}


def _stand_in(tmp_path: Path, bundle: Path, mode: str) -> Path:
    """A script that plays "<python> -m panst3r_engine serve ..." with the API stand-in."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\nshift 2\nFAKE_ENGINE_MODE={mode} FAKE_ENGINE_BUNDLE="{bundle}" '
        f'exec "{sys.executable}" "{FAKE}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in engine is started through a POSIX shell script")
def test_run_with_the_api_stand_in(addon, scene, prefs, synthetic_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    prefs.engine_mode, prefs.device = "LOCAL", "cpu"
    prefs.python_path = str(_stand_in(tmp_path, synthetic_bundle, "ok"))
    _add_photos(bpy, _photos(tmp_path / "photos", 2))
    scene.panst3r.vocab, scene.panst3r.custom_vocab = "CUSTOM", "chair, table,\nwall"
    scene.panst3r.keyframes = 2
    assert bpy.ops.panst3r.run() == {"FINISHED"}
    assert not bpy.ops.panst3r.run.poll()  # one job at a time
    seen = _drive(addon, 30)
    assert seen[-1]["state"] == "done", seen[-1]
    assert {"starting", "running"} <= {s["state"] for s in seen}
    assert sum("segment" in ob for ob in bpy.data.objects) == 5
    assert sum(ob.type == "CAMERA" for ob in bpy.data.objects) == 3
    assert Path(seen[-1]["bundle"]).is_relative_to(Path(bpy.utils.extension_path_user(addon.package, path="results")))


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in engine is started through a POSIX shell script")
@pytest.mark.parametrize("mode", ["fail", "hold"])
def test_failed_and_cancelled_runs_import_nothing(
    addon, scene, prefs, synthetic_bundle: Path, tmp_path: Path, mode: str, capsys
) -> None:
    bpy = addon.bpy
    prefs.engine_mode, prefs.python_path = "LOCAL", str(_stand_in(tmp_path, synthetic_bundle, mode))
    _add_photos(bpy, _photos(tmp_path / "photos", 1))
    assert bpy.ops.panst3r.run() == {"FINISHED"}
    if mode == "hold":
        manager = addon.module("runtime").manager
        while manager.poll()["state"] != "running":
            time.sleep(0.05)
        assert bpy.ops.panst3r.cancel() == {"FINISHED"}
    final = _drive(addon, 30)[-1]
    assert final["state"] == ("failed" if mode == "fail" else "cancelled")
    assert not any("segment" in ob for ob in bpy.data.objects)
    if mode == "fail":
        assert "PanSt3R: the photos do not fit in memory" in capsys.readouterr().out


def _engine_ready() -> str | None:
    """Why the real engine cannot serve here, or None."""
    if not (ROOT / "panst3r_engine" / "service").is_dir():
        return "panst3r_engine/service does not exist yet"
    for module in ("flask", "torch"):
        if importlib.util.find_spec(module) is None:
            return f"the engine needs {module}, which this Python lacks"
    return None


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    reason = _engine_ready()
    if reason:
        pytest.skip(f"no real engine: {reason}")
    out = tmp_path_factory.mktemp("weights") / "tiny_v2.pth"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "panst3r_engine",
            "weights",
            "random",
            "--size",
            "tiny",
            "--version",
            "v2",
            "--out",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.mark.slow
def test_run_with_the_real_engine(addon, scene, prefs, tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    bpy = addon.bpy
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the engine subprocess imports panst3r_engine from this checkout
    prefs.engine_mode, prefs.python_path, prefs.device = "LOCAL", sys.executable, "cpu"
    prefs.weights, prefs.weights_path, prefs.startup_timeout = "CUSTOM", str(tiny_checkpoint), 120.0
    photos = _photos(tmp_path / "photos", 3)
    _add_photos(bpy, photos)
    settings = scene.panst3r
    settings.vocab, settings.conf_threshold = "coco", 1.0
    assert bpy.ops.panst3r.run(extra_options='{"vocab_embeddings": "random"}') == {"FINISHED"}
    seen = _drive(addon, 240)
    final = seen[-1]
    assert final["state"] == "done", final["error"]
    assert "running" in {s["state"] for s in seen} and final["progress"] == 1.0
    data = read_bundle(final["bundle"])
    instances = [ob for ob in bpy.data.objects if "segment" in ob]
    assert instances and all(isinstance(ob["class"], str) and ob["class"] for ob in instances)
    assert sum(ob["point_count"] for ob in instances) == len(data.points["segment"])
    assert {ob["segment"] for ob in instances} <= {s.id for s in data.segments} | {0}
    cameras = [ob for ob in bpy.data.objects if ob.type == "CAMERA"]
    assert sorted(ob.name for ob in cameras) == sorted(f"Camera.{c.stem}" for c in data.cameras)
    assert len(cameras) == len(photos)
    engine = addon.module("runtime").host.engine
    assert engine is not None and engine.alive()
    addon.module("runtime").host.stop()
    assert not engine.alive()
