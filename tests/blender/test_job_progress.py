"""The add-on's progress bar over a real engine job with splats: it never goes backwards and ends full.

The real ``python -m panst3r_engine serve`` runs with a tiny random checkpoint (the fixture of test_run.py);
the add-on's own EngineHost, RunJob and JobManager drive it, as the panel does. Plain Python, no bpy.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pytest

from blender_addon.bundle import _spec
from blender_addon.client.engine import LocalConfig
from blender_addon.client.host import EngineHost, EngineSettings
from blender_addon.client.jobs import JobManager, RunJob
from tests.blender.test_run import _photos, tiny_checkpoint  # noqa: F401  (a fixture, used by name)

pytestmark = pytest.mark.slow  # minutes of real jobs: run by CI with -m slow

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {
    "vocab": "coco",
    "vocab_embeddings": "random",
    "conf_threshold": 1.0,
    "keyframes": 2,
    "splats": True,
    "splat_steps": 40,
}


def _drive(manager: JobManager, timeout: float) -> list[dict]:
    """Poll like the panel's timer (faster, to see every stage) until the job ends; every state seen."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(manager.poll())
        if seen[-1]["state"] in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.01)
    manager.cancel()
    raise AssertionError(f"the job did not end in {timeout} s: {seen[-1]}")


def test_progress_never_decreases_over_a_real_job_with_splats(tiny_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    config = LocalConfig(
        python=sys.executable,
        log_dir=tmp_path / "logs",
        weights=str(tiny_checkpoint),
        device="cpu",
        jobs_dir=tmp_path / "jobs",
        startup_timeout=120.0,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    host, manager = EngineHost(), JobManager()
    try:
        manager.start(
            RunJob(
                lambda: host.connect(EngineSettings("LOCAL", local=config)),
                _photos(tmp_path / "photos", 3),
                OPTIONS,
                tmp_path / "results",
                poll_interval=0.02,
            )
        )
        seen = _drive(manager, 300)
    finally:
        host.stop()
    final = seen[-1]
    assert final["state"] == "done", final["error"]
    trail = [(s["stage"], round(s["progress"], 4)) for s in seen]
    assert all(a["progress"] <= b["progress"] for a, b in itertools.pairwise(seen)), (
        f"the progress went backwards: {[t for i, t in enumerate(trail) if i == 0 or t != trail[i - 1]]}"
    )
    assert final["progress"] == 1.0
    assert {"splats", "write_bundle"} <= {s["stage"] for s in seen} <= {"", *_spec.STAGES}
    assert (Path(final["bundle"]) / _spec.SPLATS_FILE).is_file()
