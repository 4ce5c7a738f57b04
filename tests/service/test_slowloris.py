"""Slow-loris: half-open connections that trickle their headers must not make the engine unresponsive.

A real engine (in a child process with a small open-file limit, like a default
1024-descriptor account scaled down) is attacked from this process with
bounded loops on 127.0.0.1; an authorised ``/v1/health`` must still answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.service.conftest import TOKEN
from tests.service.test_server import ROOT, START

# ``serve`` with an open-file soft limit set first (like a default account, scaled down to this test)
LIMITED = (
    "import resource, sys; n = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
)

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="open-file limits are POSIX"), pytest.mark.slow]


class SlowLoris:
    """``count`` connections that each send a partial request and then one header byte every ``every`` s,
    reconnecting when the server drops them, until :meth:`stop` (or ``seconds``) - bounded by construction."""

    def __init__(self, host: str, port: int, count: int, every: float = 0.5, seconds: float = 30.0) -> None:
        self.address, self.count, self.every, self.seconds = (host, port), count, every, seconds
        self.done = threading.Event()
        self.dropped = 0  # connections the server closed
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=2)
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        socks: list[socket.socket | None] = [self._open() for _ in range(self.count)]
        while not self.done.is_set() and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                try:
                    if sock is None:
                        raise OSError
                    sock.send(b"a")
                except OSError:
                    if sock is not None:
                        sock.close()
                        self.dropped += 1
                    socks[i] = self._open()
            self.done.wait(self.every)
        for sock in socks:
            if sock is not None:
                sock.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)


def test_half_open_connections_do_not_block_an_authorised_request(tmp_path: Path, tiny_checkpoint: Path) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PANST3R_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LIMITED + START,
            "160",
            "--port",
            "0",
            "--jobs-dir",
            str(tmp_path / "jobs"),
            "--weights",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            "--token-file",
            str(token_file),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, "the engine did not start"
        port = int(line.split('"port": ')[1].split(",")[0])
        url = f"http://127.0.0.1:{port}/v1/health"
        with SlowLoris("127.0.0.1", port, count=200, every=0.5, seconds=40) as attack:
            time.sleep(3)  # the attack holds its connections for a few seconds first
            started = time.monotonic()
            reply = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=8)
            elapsed = time.monotonic() - started
            assert reply.status_code == 200 and elapsed < 5, elapsed
            assert attack.thread.is_alive()  # measured during the attack
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_trickling_headers_are_cut_off(start_engine) -> None:
    client = start_engine(server_kwargs={"header_timeout": 1.0, "idle_timeout": 3.0})
    port = client.engine.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    started, closed = time.monotonic(), False
    try:
        while time.monotonic() - started < 8:  # bounded: the server must close it well before this
            try:
                sock.send(b"a")
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass  # still open: keep trickling
            except OSError:
                closed = True
                break
    finally:
        sock.close()
    assert closed and time.monotonic() - started < 3.0  # header_timeout 1 s, checked every 0.25 s
    assert client.get("/v1/health").status_code == 200


def test_an_upload_without_the_token_is_refused_before_its_body(engine, jobs_dir):
    """waitress takes a request's whole body before the app runs: without the token, no body is read."""
    with socket.create_connection(("127.0.0.1", engine.engine.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x"
            b"\r\nContent-Length: 3000000000\r\n\r\n" + b"x" * 4096
        )  # 3 GB announced, 4 kB sent
        started, reply = time.monotonic(), b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk or time.monotonic() - started > 5:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
    assert (
        b'{"error": {"code": "unauthorized", "message": "this engine needs \'Authorization: Bearer <token>\'' in reply
        and b"application/json" in reply
    )
    assert time.monotonic() - started < 5
    assert engine.get("/v1/health").status_code == 200
