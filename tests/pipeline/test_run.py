"""The job's hand-offs: the bundle is written once and published with one rename; optional stages never cost
the main result; the stages are emitted in the order the bundle spec lists them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.bundle import read as bundle_read
from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.bundle.spec import STAGES
from panst3r_engine.bundle.write import remove_stale_staging, staging_path
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.pipeline.run import run_job
from tests.pipeline.conftest import textured


def options(ckpt, **kw) -> JobOptions:
    return JobOptions(weights=str(ckpt), vocab_embeddings="random", device="cpu", **kw)


@pytest.fixture
def small_photos(tmp_path) -> list[Path]:
    folder = tmp_path / "small"
    folder.mkdir()
    for i in range(3):  # 128x96 as they are: a few thousand points, so a CPU splat fit takes seconds
        Image.fromarray(textured(128, 96, 20 + i)).save(folder / f"s{i}.png")
    return sorted(folder.iterdir())


class Recorder(Progress):
    def __init__(self) -> None:
        super().__init__()
        self.stages: list[str] = []

    def show(self) -> None:
        if not self.stages or self.stages[-1] != self.stage:
            self.stages.append(self.stage)


def test_bundle_is_written_once_and_published_with_one_rename(tiny_checkpoint, small_photos, tmp_path, monkeypatch):
    renames: list[tuple[str, str]] = []
    real_rename, real_replace = os.rename, os.replace

    def rename(src, dst, *a, **kw):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real_rename(src, dst, *a, **kw)

    def replace(src, dst, *a, **kw):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *a, **kw)

    def no_read_back(*a, **kw):
        raise AssertionError("the job read its own bundle back")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(bundle_read, "read_bundle", no_read_back)
    out = tmp_path / "out"
    progress = Recorder()
    result = run_job(
        small_photos,
        out,
        options(tiny_checkpoint, conf_threshold=1.0, resize="none", splats=True, splat_steps=2, save_raw=True),
        progress,
    )
    monkeypatch.undo()
    assert [dst for _, dst in renames] == [str(out)]  # one rename: the staging folder becomes the bundle
    assert Path(renames[0][0]).parent == tmp_path and Path(renames[0][0]).name.startswith(".out.tmp-")
    bundle = read_bundle(result.bundle)
    assert bundle.manifest["splats"]["file"] == "splats.ply" and (out / "splats.ply").is_file()
    with np.load(out / "raw.npz") as raw:
        assert raw["pred_masks"].shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "small"]  # no staging folder left
    # Stages in the spec's order (the add-on's progress bar relies on it).
    assert progress.stages == [s for s in STAGES if s in progress.stages]
    assert progress.stages[-2:] == ["splats", "write_bundle"]


def test_no_point_kept_publishes_the_bundle_with_warnings(tiny_checkpoint, small_photos, tmp_path):
    """A threshold no point reaches: the main result is still published; the splats say why they are missing
    and the warning names a threshold that would keep points."""
    result = run_job(
        small_photos,
        tmp_path / "out",
        options(tiny_checkpoint, conf_threshold=1e6, resize="none", splats=True, splat_steps=2),
    )
    bundle = read_bundle(result.bundle)
    assert result.num_points == 0 and "splats" not in bundle.manifest
    assert not (result.bundle / "splats.ply").exists()
    warnings = bundle.manifest["warnings"]
    assert warnings == result.warnings and len(warnings) == 2
    assert "no point reached the confidence threshold 1e+06" in warnings[0]
    suggested = float(warnings[0].split("--conf-threshold ")[1].split()[0])
    assert 1.0 <= suggested < 1e6
    assert warnings[1].startswith("splats were skipped: no point passed the confidence threshold")


def test_too_many_keyframes_are_capped_with_a_warning(tiny_checkpoint, small_photos, tmp_path):
    result = run_job(small_photos, tmp_path / "out", options(tiny_checkpoint, resize="none", keyframes=999))
    assert result.manifest["options"]["keyframes_used"] and len(result.manifest["options"]["keyframes_used"]) == 3
    assert any("999 keyframes were asked for but there are only 3 photos" in w for w in result.warnings)


def test_staging_folders_of_dead_jobs_are_removed(tmp_path):
    out = tmp_path / "bundle"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    abandoned = tmp_path / f".bundle.tmp-{pid}-0123456789ab"
    abandoned.mkdir()
    (abandoned / "points.npz").write_bytes(b"x")
    mine = staging_path(out)
    mine.mkdir()  # this process is alive: kept
    other = tmp_path / ".bundle.tmp-notapid-0123456789ab"
    other.mkdir()  # not named as we name them: never touched
    unrelated = tmp_path / f".other.tmp-{pid}-0123456789ab"
    unrelated.mkdir()  # another output folder's
    assert remove_stale_staging(out) == [abandoned]
    assert not abandoned.exists() and mine.is_dir() and other.is_dir() and unrelated.is_dir()


@pytest.mark.slow
def test_sigterm_during_the_splat_fit_leaves_nothing(tiny_checkpoint, small_photos, tmp_path):
    """A run killed with SIGTERM while fitting splats (its staging folder exists) removes that folder."""
    import signal
    import time

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panst3r_engine",
            "run",
            *map(str, small_photos),
            "--weights",
            str(tiny_checkpoint),
            "--vocab-embeddings",
            "random",
            "--resize",
            "none",
            "--conf-threshold",
            "1",
            "--splats",
            "--splat-steps",
            "100000",
            "--json-progress",
            "--out",
            str(out),
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # wait until the fit runs
            if '"stage": "splats"' in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]  # no bundle, no hidden staging folder
