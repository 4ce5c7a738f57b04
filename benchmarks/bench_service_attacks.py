"""Attacks on a real engine: what it held (connections, memory) and how long an authorised request waited.

Usage: python benchmarks/bench_service_attacks.py [--cases slowloris,render,bomb] [--connections 0,200,600,1100]
       [--files 1024] [--hold 5]

Every case starts a fresh engine (``python -m panst3r_engine serve --port 0`` with a tiny random checkpoint;
its open-file soft limit set to ``--files`` before it starts, like a default account) and attacks it from this
process on 127.0.0.1. The engine's memory is shown as "RSS before -> peak during": its ``VmRSS`` just before
the attack and its ``VmHWM`` (/proc/<pid>/status) after it, the peak first reset through /proc/<pid>/clear_refs
(marked "(lifetime)" where that is not allowed).

slowloris: for each count, ``count`` connections each send a partial request and then one header byte every
``--every`` s, reconnecting when dropped. Once every connection was tried and ``--hold`` s later, an authorised
``GET /v1/health`` is timed (``--timeout`` s at most).

render: one small real job with splats (one 320x240 photo, ``splat_steps`` 5), then render requests of 8192x8192,
just above the CPU's pixel bound (1025x768) and within it (320x240), each while an authorised ``GET /v1/health``
is timed in a loop beside it.

bomb: photos whose header alone is too large (a real 28000x28000 1-bit PNG, ~100 kB, that inflates to 784
megapixels) and a valid 1200x1000 JPEG just over the engine's ``--bomb-megapixels`` (default 1) limit; each upload
is timed, with health beside it, and the engine's peak memory compared before and after.

Every loop is bounded in count and time; the engine is stopped after each case. POSIX/Linux only (open-file
limits, /proc). One table is printed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import requests
from PIL import Image

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


def start_engine(folder: Path, checkpoint: Path, files: int, *extra: str) -> tuple[subprocess.Popen, int]:
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
            *extra,
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


def health(port: int, timeout: float) -> tuple[int | None, float]:
    """(HTTP status or None when no answer came, seconds) of one authorised ``GET /v1/health``."""
    started = time.monotonic()
    try:
        reply = requests.get(
            f"http://127.0.0.1:{port}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout
        )
        return reply.status_code, time.monotonic() - started
    except requests.RequestException:
        return None, time.monotonic() - started


def measure(port: int, timeout: float) -> str:
    status, seconds = health(port, timeout)
    if status is None:
        return f"no answer within {timeout:.0f} s"
    return f"{seconds:.2f} s (HTTP {status})"


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float | None:
    """The process's peak resident memory (``VmHWM``; ``VmRSS``: the current one) in MiB, or None where /proc
    does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak(pid: int) -> bool:
    """Set the process's ``VmHWM`` back to its current RSS (Linux: ``5`` into /proc/<pid>/clear_refs), so the
    next reading is the peak of what came after; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_during(pid: int, action):
    """(result of ``action()``, "RSS before -> peak during" in MiB); the peak is the lifetime one, marked so,
    where it cannot be reset."""
    before = peak_rss_mib(pid, "VmRSS")
    fresh = reset_peak(pid)
    result = action()
    return result, f"{_mib(before)} -> {_mib(peak_rss_mib(pid))}" + ("" if fresh else " (lifetime)")


class HealthBeside:
    """Time authorised ``GET /v1/health`` requests one after another (``every`` s apart, each at most ``timeout``
    s, for ``seconds`` s at most) while the ``with`` block runs; at least one is timed. ``worst`` is the longest."""

    def __init__(self, port: int, timeout: float, seconds: float, every: float = 0.2) -> None:
        self.port, self.timeout, self.seconds, self.every = port, timeout, seconds, every
        self.done, self.times, self.failed = threading.Event(), [], 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            status, seconds = health(self.port, self.timeout)
            self.times.append(seconds)
            self.failed += status != 200
            if self.done.wait(self.every):
                break

    def __enter__(self) -> HealthBeside:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(self.timeout + 5)

    @property
    def worst(self) -> str:
        if not self.times:
            return "-"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"max {max(self.times):.2f} s of {len(self.times)}{failed}"


def stop_engine(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def photo(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like JPEG: gradients plus coloured blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        img[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(side: int = 28000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels, all black: ~100 kB that inflates to side^2 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, greyscale, no interlace
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the row's bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def camera(width: int, height: int) -> dict:
    """Looking down +z from 3 units behind the origin (the tiny model's points lie in front of the camera)."""
    focal = 0.8 * max(width, height)
    K = [[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]
    return {"K": K, "cam_to_world": np.eye(4).tolist(), "width": width, "height": height}


Row = tuple[str, str, str, str, str, str]  # case, requests/connections, status, seconds, health beside, RSS


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def run_slowloris(args: argparse.Namespace, tmp: Path, checkpoint: Path) -> list[Row]:
    rows: list[Row] = []
    print(
        f"slowloris: engine open-file soft limit at start: {args.files}; header byte every {args.every} s; "
        f"request after {args.hold} s"
    )
    print(f"{'connections':>11}  {'held':>5}  {'dropped':>7}  authorised /v1/health during the attack")
    for count in [int(c) for c in args.connections.split(",")]:
        folder = Path(tempfile.mkdtemp(dir=tmp))
        proc, port = start_engine(folder, checkpoint, args.files)
        attack = SlowLoris(port, count, args.every, args.hold + args.timeout + 0.5 * count + 10)
        before, fresh = peak_rss_mib(proc.pid, "VmRSS"), reset_peak(proc.pid)
        try:
            attack.thread.start()
            attack.ready.wait(0.5 * count + 10)  # every connection tried (one that hangs gives up in 0.5 s)
            time.sleep(args.hold)
            held = attack.open
            status, seconds = health(port, args.timeout)
            answer = f"no answer within {args.timeout:.0f} s" if status is None else f"{seconds:.2f} s (HTTP {status})"
            print(f"{count:>11}  {held:>5}  {attack.dropped:>7}  {answer}", flush=True)
            shown = "-" if status is None else f"{seconds:.2f}"
            rows.append(
                (
                    "slowloris",
                    f"{count} conn ({held} held, {attack.dropped} dropped)",
                    "health " + ("none" if status is None else str(status)),
                    shown,
                    f"{shown} (the request itself)",
                    f"{_mib(before)} -> {_mib(peak_rss_mib(proc.pid))}" + ("" if fresh else " (lifetime)"),
                )
            )
        finally:
            attack.done.set()
            attack.thread.join(30)
            stop_engine(proc)
    return rows


def _timed(port: int, args: argparse.Namespace, send) -> tuple[str, float, str]:
    """(status, seconds, health beside) of ``send()`` (a ``requests`` call) with health timed beside it."""
    with HealthBeside(port, args.timeout, args.case_timeout + 5) as beside:
        started = time.monotonic()
        try:
            reply = send()
            status = str(reply.status_code)
            if reply.status_code >= 400:
                try:
                    status += f" {reply.json()['error']['code']}"
                except (ValueError, KeyError, TypeError):
                    pass
        except requests.RequestException as exc:
            status = f"none ({type(exc).__name__})"
        seconds = time.monotonic() - started
    return status, seconds, beside.worst


def run_render(args: argparse.Namespace, tmp: Path, checkpoint: Path) -> list[Row]:
    folder = Path(tempfile.mkdtemp(dir=tmp))
    proc, port = start_engine(folder, checkpoint, args.files)
    rows: list[Row] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{port}/v1/jobs"
    try:
        options = {
            "splats": True,
            "splat_steps": 5,
            "conf_threshold": 1.0,
            "vocab_embeddings": "random",
            "postprocess": "standard_v1",
        }
        files = [("images", ("a.jpg", photo(320, 240), "image/jpeg")), ("options", (None, json.dumps(options)))]
        started = time.monotonic()

        def run_job() -> tuple[dict, str]:
            job = requests.post(base, files=files, headers=auth, timeout=args.timeout).json()
            deadline, state = started + args.job_timeout, job.get("state")
            while state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
                time.sleep(0.5)
                state = requests.get(f"{base}/{job['id']}", headers=auth, timeout=args.timeout).json()["state"]
            return job, state

        (job, state), rss = peak_during(proc.pid, run_job)
        seconds = time.monotonic() - started
        print(f"render: job {job.get('id')} {state} in {seconds:.1f} s; RSS {rss} MiB", flush=True)
        rows.append(("render", "job (1 photo, splats; setup)", str(state), f"{seconds:.2f}", "-", rss))
        if state != "done":
            return rows
        for width, height, label in (
            (8192, 8192, "8192x8192"),
            (1025, 768, "1025x768 (CPU bound+1 row)"),
            (320, 240, "320x240 (within)"),
        ):
            (status, seconds, beside), rss = peak_during(
                proc.pid,
                lambda w=width, h=height: _timed(
                    port,
                    args,
                    lambda: requests.post(
                        f"{base}/{job['id']}/render", json=camera(w, h), headers=auth, timeout=args.case_timeout
                    ),
                ),
            )
            print(
                f"render {label}: HTTP {status} in {seconds:.2f} s; health {beside}; "
                f"RSS before -> peak during {rss} MiB",
                flush=True,
            )
            rows.append(("render", f"1 render {label}", status, f"{seconds:.2f}", beside, rss))
    finally:
        stop_engine(proc)
    return rows


def run_bomb(args: argparse.Namespace, tmp: Path, checkpoint: Path) -> list[Row]:
    folder = Path(tempfile.mkdtemp(dir=tmp))
    proc, port = start_engine(folder, checkpoint, args.files, "--max-megapixels", str(args.bomb_megapixels))
    rows: list[Row] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        health(port, args.timeout)  # the engine's own start-up memory, before any upload
        uploads = (("bomb.png", png_bomb(), "28000x28000 PNG"), ("big.jpg", photo(1200, 1000), "1200x1000 JPEG"))
        for name, data, label in uploads:
            files = [("images", (name, data, "application/octet-stream"))]
            (status, seconds, beside), rss = peak_during(
                proc.pid,
                lambda f=files: _timed(
                    port,
                    args,
                    lambda: requests.post(
                        f"http://127.0.0.1:{port}/v1/jobs", files=f, headers=auth, timeout=args.case_timeout
                    ),
                ),
            )
            print(
                f"bomb {label} ({len(data) / 1024:.0f} kB): HTTP {status} in {seconds:.2f} s; health {beside}; "
                f"RSS before -> peak during {rss} MiB",
                flush=True,
            )
            rows.append(
                (
                    "bomb",
                    f"1 upload {label}, {len(data) / 1024:.0f} kB",
                    status,
                    f"{seconds:.2f}",
                    beside,
                    rss,
                )
            )
    finally:
        stop_engine(proc)
    return rows


CASES = {"slowloris": run_slowloris, "render": run_render, "bomb": run_bomb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="slowloris,render,bomb", help="comma-separated: " + ",".join(CASES))
    parser.add_argument("--connections", default="0,200,600,1100", help="comma-separated attack sizes")
    parser.add_argument("--files", type=int, default=1024, help="the engine's open-file soft limit at start")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the attack runs before the request")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between header bytes")
    parser.add_argument("--timeout", type=float, default=15.0, help="longest wait for the authorised request")
    parser.add_argument("--case-timeout", type=float, default=120.0, help="longest wait for one render or upload")
    parser.add_argument("--job-timeout", type=float, default=300.0, help="longest wait for the render case's job")
    parser.add_argument("--bomb-megapixels", type=float, default=1.0, help="the bomb engine's --max-megapixels")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    counts = [int(c) for c in args.connections.split(",")] if "slowloris" in cases else [0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max(counts) + 64:  # this process holds the attack's sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(counts) + 256), hard))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="panst3r-bench-attack-") as tmp:
        checkpoint = write_random_checkpoint(Path(tmp) / "tiny.pth", "v2", "tiny", seed=5)
        for case in cases:
            rows += CASES[case](args, Path(tmp), checkpoint)
    head: Row = ("case", "requests/connections", "status", "seconds", "authorised /v1/health beside", "engine RSS MiB")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    for row in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
