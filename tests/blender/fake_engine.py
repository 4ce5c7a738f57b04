"""A stand-in for ``python -m panst3r_engine serve`` speaking service API v1 (stdlib only).

Run as a script with the serve arguments, it prints the "listening" line and
serves one bundle folder (``FAKE_ENGINE_BUNDLE``) as every job's result. The
behaviour is chosen with ``FAKE_ENGINE_MODE``:

- ``ok``: jobs go queued -> running (three stages) -> done over a few polls;
- ``fail``: jobs fail with an error message;
- ``hold``: jobs stay running until cancelled;
- ``die``: print to stderr and exit before listening;
- ``silent``: never print the listening line;
- ``chatty``: print non-JSON lines before the listening line.

Tests also import :func:`make_server` to run it in a thread, and can make it
hostile: ``FakeEngine.next_id`` is the id the next submission gets (any JSON
value), ``FakeEngine.status_reply`` replaces every status body, and
``FakeEngine.bundle_zip`` can be replaced by a function returning any bytes.
Job ids have the real service's format (``YYYYmmdd-HHMMSS-<6 hex>``).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STAGES = ["load_images", "encode", "postprocess"]


class FakeEngine:
    def __init__(self, token: str, bundle: Path | None, mode: str) -> None:
        self.token, self.bundle, self.mode = token, bundle, mode
        self.jobs: dict[str, dict] = {}
        self.submissions: list[dict] = []
        self.next_id: object = None  # hostile tests: the id the next submission is given
        self.status_reply: dict | None = None  # hostile tests: every GET but health and bundle gets this body
        self.requests: list[str] = []  # every request line's path, in order
        self.lock = threading.Lock()

    def advance(self, job: dict) -> dict:
        """Each status request moves an 'ok' job one step further."""
        job["polls"] += 1
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        if self.mode == "fail" and job["polls"] >= 2:
            job.update(state="failed", error={"code": "out_of_memory", "message": "the photos do not fit in memory"})
        elif self.mode == "hold":
            job.update(state="running", stage="encode", fraction=0.5)
        elif job["polls"] > len(STAGES):
            job.update(state="done", stage="write_bundle", fraction=1.0)
        elif job["polls"] >= 1:
            job.update(state="running", stage=STAGES[job["polls"] - 1], fraction=0.5)
        return job

    def bundle_zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path in sorted(self.bundle.rglob("*")):
                if path.is_file():
                    zf.write(path, f"bundle/{path.relative_to(self.bundle).as_posix()}")
        return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    engine: FakeEngine

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body: dict | bytes, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, name: str, message: str) -> None:
        self._send(code, {"error": {"code": name, "message": message}})

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.engine.token}":
            self._error(401, "unauthorized", "missing or wrong token")
            return False
        return True

    def _job(self) -> dict | None:
        parts = self.path.split("/")
        job = self.engine.jobs.get(parts[3]) if len(parts) > 3 else None
        if job is None:
            self._error(404, "not_found", "no such job")
        return job

    def do_GET(self) -> None:
        self.engine.requests.append(self.path)
        if not self._authorised():
            return
        if self.path == "/v1/health":
            self._send(200, {"version": "fake", "device": "cpu", "model_loaded": True, "queue": 0})
        elif self.engine.status_reply is not None:  # hostile: any path is a done job with this status
            if self.path.endswith("/bundle"):
                self._send(200, self.engine.bundle_zip(), "application/zip")
            else:
                self._send(200, self.engine.status_reply)
        elif self.path.startswith("/v1/jobs/") and self.path.endswith("/bundle"):
            job = self._job()
            if job is not None and job["state"] != "done":
                self._error(409, "not_done", "the job is not done")
            elif job is not None:
                self._send(200, self.engine.bundle_zip(), "application/zip")
        elif self.path.startswith("/v1/jobs/"):
            job = self._job()
            if job is not None:
                with self.engine.lock:
                    state = self.engine.advance(job)
                self._send(200, {k: state[k] for k in ("id", "state", "stage", "fraction", "message", "error")})
        else:
            self._error(404, "not_found", f"unknown path {self.path}")

    def do_POST(self) -> None:
        self.engine.requests.append(self.path)
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path == "/v1/shutdown":
            self._send(200, {"ok": True})
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        elif self.path == "/v1/jobs":
            options = body.split(b'name="options"', 1)[1].split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
            job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
            self.engine.submissions.append({"options": json.loads(options), "images": body.count(b'name="images"')})
            self.engine.jobs[job_id] = {
                "id": job_id,
                "state": "queued",
                "stage": "",
                "fraction": 0.0,
                "message": "",
                "error": None,
                "polls": 0,
            }
            self._send(202, {"id": job_id if self.engine.next_id is None else self.engine.next_id})
        else:
            self._error(404, "not_found", f"unknown path {self.path}")

    def do_DELETE(self) -> None:
        self.engine.requests.append(self.path)
        if self._authorised() and self.path.startswith("/v1/jobs/"):
            job = self._job()
            if job is not None:
                job.update(state="cancelled")
                self._send(200, {"id": job["id"], "state": "cancelled"})


def make_server(token: str, bundle: Path | None, mode: str = "ok") -> tuple[ThreadingHTTPServer, FakeEngine]:
    """A fake engine on 127.0.0.1 (random port); call ``serve_forever`` in a thread."""
    engine = FakeEngine(token, bundle, mode)
    handler = type("BoundHandler", (Handler,), {"engine": engine})
    return ThreadingHTTPServer(("127.0.0.1", 0), handler), engine


def main() -> int:
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    if mode == "die":
        print("Traceback: RuntimeError: no CUDA device", file=sys.stderr, flush=True)
        return 3
    if mode == "silent":
        time.sleep(60)
        return 0
    if mode == "chatty":
        print("loading the model...", flush=True)
    bundle = os.environ.get("FAKE_ENGINE_BUNDLE")
    token = secrets.token_hex(8)
    server, _ = make_server(token, Path(bundle) if bundle else None, mode)
    port = server.server_address[1]
    print(
        json.dumps(
            {
                "event": "listening",
                "port": port,
                "url": f"http://127.0.0.1:{port}",
                "token": token,
                "version": "fake",
                "api_version": int(os.environ.get("FAKE_ENGINE_API", "1")),
                "pid": os.getpid(),
                "argv": sys.argv[1:],
            }
        ),
        flush=True,
    )
    print("after listening: this goes to the log", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
