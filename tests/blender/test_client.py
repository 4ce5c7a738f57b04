"""The engine client and the local engine subprocess (plain Python, against tests/blender/fake_engine.py)."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from blender_addon.client.engine import EngineClient, EngineError, LocalConfig, LocalEngine, _safe_extract, is_local_url
from tests.blender.fake_engine import make_server

FAKE = Path(__file__).resolve().parent / "fake_engine.py"


@pytest.fixture
def fake(synthetic_bundle: Path):
    """A fake engine in a thread: (server, state, client)."""
    server, engine = make_server("secret", synthetic_bundle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = EngineClient(f"http://127.0.0.1:{server.server_address[1]}", "secret", timeout=5)
    yield server, engine, client
    server.shutdown()
    server.server_close()


def _photos(tmp_path: Path, count: int = 2) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"photo_{i}.jpg"
        path.write_bytes(b"\xff\xd8not really a jpeg")
        paths.append(path)
    return paths


def test_jobs_round_trip(fake, tmp_path: Path) -> None:
    _, engine, client = fake
    assert client.health()["model_loaded"] is True
    job_id = client.submit(_photos(tmp_path, 3), {"vocab": ["chair", "table"], "conf_threshold": 2.0})
    assert engine.submissions == [{"options": {"vocab": ["chair", "table"], "conf_threshold": 2.0}, "images": 3}]
    states = [client.status(job_id)["state"] for _ in range(5)]
    assert states[0] == "running" and states[-1] == "done"
    bundle = client.download_bundle(job_id, tmp_path / "results" / job_id)
    assert (bundle / "manifest.json").is_file() and (bundle / "points.npz").is_file()
    assert bundle.parent == tmp_path / "results" / job_id  # the zip holds a "bundle/" folder
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [job_id]  # no temporary leftovers


def test_errors_are_sentences(fake, tmp_path: Path) -> None:
    server, _, client = fake
    with pytest.raises(EngineError, match="no such job"):
        client.status("20260101-000000-abcdef")
    with pytest.raises(EngineError, match="'nope' is not a PanSt3R job id"):
        client.status("nope")
    with pytest.raises(EngineError, match="refused the access token"):
        EngineClient(client.url, "wrong").health()
    with pytest.raises(EngineError, match="cannot read the photo"):
        client.submit([tmp_path / "missing.jpg"], {})
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(EngineError, match=f"cannot reach the engine at http://127.0.0.1:{port}"):
        client.health()


def test_unsafe_archives_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(EngineError, match="unsafe path"):
        _safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_local_urls() -> None:
    assert is_local_url("http://127.0.0.1:8765") and is_local_url("http://localhost/x")
    assert not is_local_url("https://gpu.example.org:8765")


def _config(tmp_path: Path, mode: str = "ok", timeout: float = 30.0, **env) -> LocalConfig:
    return LocalConfig(
        python=sys.executable,
        log_dir=tmp_path / "logs",
        weights="v2",
        device="cpu",
        jobs_dir=tmp_path / "jobs",
        startup_timeout=timeout,
        command=[sys.executable, str(FAKE)],
        env={"FAKE_ENGINE_MODE": mode, **env},
    )


def test_local_engine_starts_serves_and_stops(tmp_path: Path, synthetic_bundle: Path) -> None:
    engine = LocalEngine.start(_config(tmp_path, FAKE_ENGINE_BUNDLE=str(synthetic_bundle)))
    try:
        assert engine.info["argv"] == [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--weights",
            "v2",
            "--device",
            "cpu",
            "--jobs-dir",
            str(tmp_path / "jobs"),
        ]
        assert engine.client.health()["version"] == "fake" and engine.alive()
    finally:
        engine.stop()
    assert not engine.alive()
    assert "after listening: this goes to the log" in engine.log_path.read_text()


def test_local_engine_that_dies_shows_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"exited with code 3 before it was ready(.|\n)*no CUDA device"):
        LocalEngine.start(_config(tmp_path, "die"))


def test_local_engine_start_times_out(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="did not start within 1 s; see its log at"):
        LocalEngine.start(_config(tmp_path, "silent", timeout=1.0))


def test_local_engine_tolerates_chatter_and_checks_the_api_version(tmp_path: Path) -> None:
    LocalEngine.start(_config(tmp_path, "chatty")).stop()
    with pytest.raises(EngineError, match="API version 2.*needs version 1"):
        LocalEngine.start(_config(tmp_path, FAKE_ENGINE_API="2"))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_engine_is_reported_with_its_log(tmp_path: Path) -> None:
    engine = LocalEngine.start(_config(tmp_path))
    os.kill(engine.process.pid, signal.SIGKILL)
    engine.process.wait(5)
    with pytest.raises(EngineError, match=r"the engine stopped \(exit code -9\); see its log at .*engine.log"):
        engine.client.health()


def test_missing_python_is_a_sentence(tmp_path: Path) -> None:
    config = LocalConfig(python=str(tmp_path / "nope" / "python"), log_dir=tmp_path)
    with pytest.raises(EngineError, match="does not exist; create the engine environment"):
        LocalEngine.start(config)
    assert config.argv()[:5] == [str(tmp_path / "nope" / "python"), "-m", "panst3r_engine", "serve", "--host"]


def test_zip_without_manifest(fake, tmp_path: Path, monkeypatch) -> None:
    _, engine, client = fake
    job_id = client.submit(_photos(tmp_path), {})
    for _ in range(5):
        client.status(job_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    monkeypatch.setattr(engine, "bundle_zip", lambda: buffer.getvalue())
    with pytest.raises(EngineError, match="no manifest.json"):
        client.download_bundle(job_id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
