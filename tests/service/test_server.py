"""The engine as a process: the start-up line, the token file, graceful stops, the command line."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from panst3r_engine import __version__
from panst3r_engine.cli import main
from panst3r_engine.service.server import EngineServer, ServeError, add_serve_command
from tests.service.conftest import FAST, TOKEN, Client, photo_bytes

ROOT = Path(__file__).resolve().parents[2]
START = "import sys; from panst3r_engine.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"


def start_process(tmp_path: Path, checkpoint: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    """``serve`` in a child process; returns it and its parsed start-up line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PANST3R_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            START,
            "--port",
            "0",
            "--jobs-dir",
            str(tmp_path / "jobs"),
            "--weights",
            str(checkpoint),
            "--device",
            "cpu",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=60)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"no start-up line within 60 s; stderr: {proc.communicate()[1][-2000:]}")
    assert first.endswith("\n"), f"start-up failed: {proc.communicate()[1][-2000:]}"
    return proc, json.loads(first)


def stop_and_check(proc: subprocess.Popen, timeout: float = 60) -> str:
    """Wait for a clean exit (status 0, nothing more on stdout); returns stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the engine did not stop within {timeout} s")
    assert proc.returncode == 0, err[-3000:]
    assert out == ""  # the start-up line is the only stdout output
    return err


def test_token_file_startup_line_and_sigterm(tmp_path, tiny_checkpoint):
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    proc, line = start_process(tmp_path, tiny_checkpoint, "--token-file", str(token_file))
    try:
        assert list(line) == ["event", "host", "port", "url", "version", "api_version", "pid"]  # no token
        assert line["event"] == "listening" and line["host"] == "127.0.0.1" and line["pid"] == proc.pid
        assert isinstance(line["port"], int) and line["url"] == f"http://127.0.0.1:{line['port']}"
        assert (line["version"], line["api_version"]) == (__version__, 1)
        assert Client(line["url"], TOKEN).get("/v1/health").status_code == 200
        assert requests.get(line["url"] + "/v1/health", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
    assert "listening on" in stop_and_check(proc)


def test_shutdown_cancels_the_running_job_and_exits_0(tmp_path, tiny_checkpoint):
    proc, line = start_process(tmp_path, tiny_checkpoint)
    try:
        assert len(line["token"]) >= 40
        client = Client(line["url"], line["token"])
        job = client.submit([(f"p{i}.jpg", photo_bytes(seed=i)) for i in range(4)], FAST).json()
        queued = client.submit([("q.jpg", photo_bytes())], FAST).json()
        assert client.wait(job["id"], states=("running",), timeout=60)["state"] == "running"
        assert client.post("/v1/shutdown").status_code == 202
    except BaseException:
        proc.kill()
        raise
    stop_and_check(proc)
    for job_id in (job["id"], queued["id"]):
        folder = tmp_path / "jobs" / job_id
        assert json.loads((folder / "job.json").read_text())["state"] == "cancelled"
        assert sorted(p.name for p in folder.iterdir()) == ["job.json"]  # no bundle, no uploads


def test_short_token_file_is_refused(tmp_path, capsys):
    token_file = tmp_path / "token.txt"
    token_file.write_text("secret\n")
    assert main(["serve", "--token-file", str(token_file)]) == 2
    assert "too short" in capsys.readouterr().err


def test_busy_port_is_explained(tmp_path, tiny_checkpoint, start_engine):
    busy = start_engine().engine.port
    config = {"TOKEN": TOKEN, "JOBS_DIR": tmp_path / "other", "WEIGHTS": str(tiny_checkpoint), "DEVICE": "cpu"}
    with pytest.raises(ServeError, match=f"127.0.0.1:{busy}.*--port"):
        EngineServer("127.0.0.1", busy, config)


def test_command_line_defaults():
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.token_file, args.jobs_dir, args.weights, args.device) == (
        "127.0.0.1",
        0,
        None,
        None,
        "v2",
        "auto",
    )
    assert (args.preload, args.max_upload_mb, args.max_images, args.keep_jobs, args.job_ttl_hours) == (
        False,
        4096,
        2000,
        20,
        24.0,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-images", "0"])
