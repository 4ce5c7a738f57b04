"""Slow-loris against a real engine: how long an authorised request waits while half-open connections are held.

Usage: python benchmarks/bench_service_attacks.py [--connections 0,200,600,1100] [--files 1024] [--hold 5]

For each count, a fresh engine (``python -m panst3r_engine serve --port 0`` with a
tiny random checkpoint; its open-file soft limit set to ``--files`` before it
starts, like a default account) is attacked from this process on 127.0.0.1:
``count`` connections each send a partial request and then one header byte every
``--every`` s, reconnecting when dropped. Once every connection was tried and
``--hold`` s later, an authorised
``GET /v1/health`` is timed (``--timeout`` s at most). Every loop is bounded;
the engine is stopped after each row. POSIX only (open-file limits).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panst3r_engine.model.checkpoints import write_random_checkpoint  # noqa: E402

TOKEN = "bench-attack-token-0123456789"
START = (
    "import resource, sys; n = int(sys.argv.pop(1)); "  # the open-file soft limit, then serve
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "from panst3r_engine.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
)


class SlowLoris:
    """Hold ``count`` half-open connections (bounded by ``seconds``); counts what is open and what was dropped."""

    def __init__(self, port: int, count: int, every: float, seconds: float) -> None:
        self.port, self.count, self.every, self.seconds = port, count, every, seconds
        self.done, self.ready, self.dropped, self.open = threading.Event(), threading.Event(), 0, 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        socks: list[socket.socket | None] = []
        for _ in range(self.count):
            if self.done.is_set() or time.monotonic() > deadline:
                break
            socks.append(self._connect())
            self.open += socks[-1] is not None
        self.ready.set()
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
                    socks[i] = self._connect()
            self.open = sum(s is not None for s in socks)
            self.done.wait(self.every)
        for sock in socks:
            if sock is not None:
                sock.close()


def start_engine(folder: Path, checkpoint: Path, files: int) -> tuple[subprocess.Popen, int]:
    token_file = folder / "token.txt"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PANST3R_HOME": str(folder / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            START,
            str(files),
            "--port",
            "0",
            "--jobs-dir",
            str(folder / "jobs"),
            "--weights",
            str(checkpoint),
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
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the engine did not start")
    return proc, int(json.loads(line)["port"])


def measure(port: int, timeout: float) -> str:
    started = time.monotonic()
    try:
        reply = requests.get(
            f"http://127.0.0.1:{port}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout
        )
        return f"{time.monotonic() - started:.2f} s (HTTP {reply.status_code})"
    except requests.RequestException as exc:
        return f"no answer within {timeout:.0f} s ({type(exc).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="0,200,600,1100", help="comma-separated attack sizes")
    parser.add_argument("--files", type=int, default=1024, help="the engine's open-file soft limit at start")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the attack runs before the request")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between header bytes")
    parser.add_argument("--timeout", type=float, default=15.0, help="longest wait for the authorised request")
    args = parser.parse_args()
    counts = [int(c) for c in args.connections.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max(counts) + 64:  # this process holds the attack's sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(counts) + 256), hard))
    with tempfile.TemporaryDirectory(prefix="panst3r-bench-attack-") as tmp:
        checkpoint = write_random_checkpoint(Path(tmp) / "tiny.pth", "v2", "tiny", seed=5)
        print(
            f"engine open-file soft limit at start: {args.files}; header byte every {args.every} s; "
            f"request after {args.hold} s"
        )
        print(f"{'connections':>11}  {'held':>5}  {'dropped':>7}  authorised /v1/health during the attack")
        for count in counts:
            folder = Path(tempfile.mkdtemp(dir=tmp))
            proc, port = start_engine(folder, checkpoint, args.files)
            attack = SlowLoris(port, count, args.every, args.hold + args.timeout + 0.5 * count + 10)
            try:
                attack.thread.start()
                attack.ready.wait(0.5 * count + 10)  # every connection tried (one that hangs gives up in 0.5 s)
                time.sleep(args.hold)
                held = attack.open
                answer = measure(port, args.timeout)
                print(f"{count:>11}  {held:>5}  {attack.dropped:>7}  {answer}", flush=True)
            finally:
                attack.done.set()
                attack.thread.join(30)
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


if __name__ == "__main__":
    main()
