"""JobManager, RunJob, CommandJob, EngineHost and the environment steps (plain Python, fake engine)."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import pytest

from blender_addon.bundle import _spec
from blender_addon.client.engine import EngineClient, EngineError, LocalConfig
from blender_addon.client.environment import (
    TORCH_INDEXES,
    _stage_source,
    env_python,
    environment_steps,
    find_engine_source,
    weights_steps,
)
from blender_addon.client.host import EngineHost, EngineSettings
from blender_addon.client.jobs import CommandJob, JobManager, RunJob, Step
from tests.blender import fake_engine
from tests.blender.fake_engine import make_server

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_engine.py"


@pytest.fixture
def serve(synthetic_bundle: Path):
    """Start fake engines in threads: serve(mode) -> (client, state)."""
    servers = []

    def start(mode: str = "ok"):
        server, engine = make_server("t", synthetic_bundle, mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return EngineClient(f"http://127.0.0.1:{server.server_address[1]}", "t"), engine

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _drive(manager: JobManager, timeout: float = 20.0) -> list[dict]:
    """Poll like the UI timer until the job ends; returns every state seen."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = manager.poll()
        seen.append(state)
        if state["state"] in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the job did not end: {seen[-1]}")


def test_run_job_downloads_the_bundle(serve, tmp_path: Path) -> None:
    client, engine = serve()
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    manager = JobManager()
    assert manager.poll()["state"] == "idle" and not manager.busy
    manager.start(RunJob(lambda: client, [photo], {"vocab": "coco"}, tmp_path / "results", poll_interval=0.01))
    seen = _drive(manager)
    final = seen[-1]
    assert final["state"] == "done" and final["error"] is None and final["progress"] == 1.0
    assert (Path(final["bundle"]) / "manifest.json").is_file()
    assert Path(final["bundle"]).is_relative_to(tmp_path / "results" / final["job_id"])
    assert "running" in {s["state"] for s in seen} and engine.submissions[0]["options"] == {"vocab": "coco"}


def test_failed_job_carries_the_engine_message(serve, tmp_path: Path) -> None:
    client, _ = serve("fail")
    manager = JobManager()
    manager.start(RunJob(lambda: client, [], {}, tmp_path, poll_interval=0.01))
    final = _drive(manager)[-1]
    assert final["state"] == "failed" and final["error"] == "the photos do not fit in memory"


def test_cancel_reaches_the_engine(serve, tmp_path: Path) -> None:
    client, engine = serve("hold")
    manager = JobManager()
    job = manager.start(RunJob(lambda: client, [], {}, tmp_path, poll_interval=0.01))
    while manager.poll()["state"] != "running":
        time.sleep(0.01)
    with pytest.raises(EngineError, match="already running"):
        manager.start(RunJob(lambda: client, [], {}, tmp_path))
    assert manager.cancel() is True
    assert _drive(manager)[-1]["state"] == "cancelled"
    assert engine.jobs[job.poll()["job_id"]]["state"] == "cancelled"
    assert manager.cancel() is False


def test_connection_failure_fails_the_job(tmp_path: Path) -> None:
    def connect():
        raise EngineError("the engine exited with code 1 before it was ready")

    manager = JobManager()
    manager.start(RunJob(connect, [], {}, tmp_path))
    final = _drive(manager)[-1]
    assert final["state"] == "failed" and final["error"].startswith("the engine exited")


def test_overall_progress_rises_through_the_spec_stages() -> None:
    walk = [_spec.overall_progress(stage, f) for stage in _spec.STAGES for f in (0.0, 0.25, 1.0)]
    assert walk[0] == 0.0 and walk[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(walk)), walk
    assert _spec.overall_progress("encode", 0.5) < _spec.overall_progress("postprocess", 0.0)
    assert _spec.STAGES.index("splats") < _spec.STAGES.index("write_bundle")  # the bundle is written last
    assert _spec.overall_progress("something new", 0.3) == 0.0
    assert _spec.overall_progress("cameras", 7.0) == _spec.overall_progress("cameras", 1.0)


def test_an_unknown_engine_stage_keeps_the_progress(serve, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fake_engine, "STAGES", ["postprocess", "a_stage_from_a_newer_engine", "cameras"])
    client, _ = serve()
    manager = JobManager()
    manager.start(RunJob(lambda: client, [], {}, tmp_path / "results", poll_interval=0.2))  # _drive sees each stage
    seen = [s for s in _drive(manager) if s["state"] == "running"]
    progress = {s["stage"]: s["progress"] for s in seen}
    assert set(progress) == {"postprocess", "a_stage_from_a_newer_engine", "cameras"}, progress
    assert (
        progress["a_stage_from_a_newer_engine"] == progress["postprocess"] == _spec.overall_progress("postprocess", 0.5)
    )
    assert all(a["progress"] <= b["progress"] for a, b in itertools.pairwise(seen))


def test_command_job_streams_progress_and_fails_with_a_sentence(tmp_path: Path) -> None:
    ran = []
    steps = [
        Step("python step", func=lambda: ran.append(1)),
        Step("counting", [sys.executable, "-c", "print('25%'); print('done 100%')"]),
        Step("breaking", [sys.executable, "-c", "import sys; print('boom'); sys.exit(4)"]),
    ]
    manager = JobManager()
    manager.start(CommandJob("Setup", steps, tmp_path / "setup.log"))
    final = _drive(manager)[-1]
    assert ran == [1]
    assert final["state"] == "failed" and final["error"].startswith("breaking failed (exit code 4): boom")
    log = (tmp_path / "setup.log").read_text()
    assert "25%" in log and "boom" in log


def test_command_job_cancel_kills_the_process(tmp_path: Path) -> None:
    manager = JobManager()
    manager.start(
        CommandJob(
            "Slow", [Step("sleeping", [sys.executable, "-c", "import time; time.sleep(60)"])], tmp_path / "log.txt"
        )
    )
    time.sleep(0.3)
    started = time.monotonic()
    manager.cancel()
    assert _drive(manager)[-1]["state"] == "cancelled" and time.monotonic() - started < 5


def _local(tmp_path: Path, bundle: Path, weights: str = "v2") -> EngineSettings:
    return EngineSettings(
        "LOCAL",
        local=LocalConfig(
            python=sys.executable,
            log_dir=tmp_path,
            weights=weights,
            command=[sys.executable, str(FAKE)],
            env={"FAKE_ENGINE_BUNDLE": str(bundle)},
        ),
    )


def test_engine_host_keeps_one_engine_warm(tmp_path: Path, synthetic_bundle: Path) -> None:
    host = EngineHost()
    try:
        first = host.connect(_local(tmp_path, synthetic_bundle))
        assert host.connect(_local(tmp_path, synthetic_bundle)) is first  # same settings: reused
        pid = host.engine.process.pid
        assert "running at http://127.0.0.1" in host.describe()
        second = host.connect(_local(tmp_path, synthetic_bundle, weights="v1"))  # changed settings: restarted
        assert second is not first and host.engine.process.pid != pid
        host.engine.process.kill()
        host.engine.process.wait(5)
        assert "stopped" in host.describe()
        assert host.connect(_local(tmp_path, synthetic_bundle, weights="v1")).health()["version"] == "fake"
    finally:
        host.stop()
    assert host.describe() == "not running"
    with pytest.raises(EngineError, match="no engine URL"):
        host.connect(EngineSettings("REMOTE"))
    assert host.connect(EngineSettings("REMOTE", url="http://10.0.0.2:1/", token="k")).url == "http://10.0.0.2:1"


def test_environment_steps(tmp_path: Path) -> None:
    steps = environment_steps(tmp_path / "env", ROOT, "CPU", base_python="/usr/bin/python3.11")
    python = str(env_python(tmp_path / "env"))
    assert steps[0].argv == ["/usr/bin/python3.11", "-m", "venv", str(tmp_path / "env")]
    torch = next(s for s in steps if s.label == "installing torch").argv
    assert torch[0] == python and torch[-2:] == ["--index-url", TORCH_INDEXES["CPU"]]
    engine = next(s for s in steps if s.label == "installing the engine").argv
    assert engine[0] == python and engine[-1].endswith("engine[text,video]") and "panst3r-engine-source-" in engine[-1]
    with pytest.raises(EngineError, match="does not contain the engine source"):
        environment_steps(tmp_path / "env", None)
    with pytest.raises(EngineError, match="create the engine environment first"):
        weights_steps(str(tmp_path / "missing"), ["panst3r-v2-512"])
    download = weights_steps(sys.executable, ["panst3r-v2-512"], "/cache")[0]
    assert download.argv[1:] == ["-m", "panst3r_engine", "weights", "download", "panst3r-v2-512", "--accept-license"]
    assert download.env == {"PANST3R_HOME": "/cache"}


def test_engine_source_is_found_and_staged_without_caches(tmp_path: Path) -> None:
    assert find_engine_source(ROOT / "blender_addon") == ROOT  # a development checkout
    assert find_engine_source(tmp_path) is None
    _stage_source(ROOT, tmp_path / "staged")
    staged = tmp_path / "staged"
    assert (staged / "panst3r_engine" / "__init__.py").is_file() and (staged / "pyproject.toml").is_file()
    assert not list(staged.rglob("__pycache__")) and (staged / "README.md").is_file()
