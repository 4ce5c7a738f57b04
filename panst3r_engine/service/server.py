"""Running the service: ``python -m panst3r_engine serve``.

Local use (the Blender add-on): the add-on starts the engine with ``--port 0``,
reads the one JSON line it prints on stdout (port, URL, generated token) and
talks to it on 127.0.0.1. Logs go to stderr.

Remote use (a GPU box serving artists' laptops): start it with
``--host 0.0.0.0 --port 8765 --token-file token.txt``, give the token to the
artists, and keep the port behind a firewall or VPN: the token is the only
access control and there is no TLS, so never expose the port to the internet
(put a TLS reverse proxy in front if traffic leaves a trusted network).

Studio use (one engine URL in front of GPU machines): ``--cluster ray`` (a
local Ray), ``--cluster auto`` (the Ray cluster this machine joined) or
``--cluster ray://HEAD:10001`` runs each job on a Ray worker holding a warm
model, one per GPU (``--cluster-cpu-workers N``: N CPU workers instead). The
API is unchanged. Ray has no authentication: keep its ports on a private network.

A graceful stop (``POST /v1/shutdown``, SIGTERM or Ctrl-C) refuses new jobs,
cancels queued ones, cancels the running job at its next progress update and
exits with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from panst3r_engine import __version__
from panst3r_engine.errors import PanSt3RError
from panst3r_engine.service import API_VERSION

if TYPE_CHECKING:
    from panst3r_engine.service.jobs import JobManager

log = logging.getLogger(__name__)


class ServeError(PanSt3RError):
    """The engine cannot start serving; the message says what to change."""

    code = "bad_options"


# Connection handling (waitress, not Werkzeug's development server): connections are served by one
# event loop, so a half-open connection costs a file descriptor, not a thread; request handlers run in a
# small thread pool. Slow-loris defences: a request's headers must arrive within HEADER_TIMEOUT s of its
# first byte, an idle connection is closed after IDLE_TIMEOUT s, the open-file limit is raised to its hard
# limit at start, and the connection limit stays below it (the jobs still need files).
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
THREADS = 8
MAX_CONNECTIONS = 4096
RESERVED_FILES = 128  # file descriptors kept for jobs, models and logs


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (POSIX); returns the soft limit then."""
    try:
        import resource
    except ImportError:  # Windows: select() takes at most 512 sockets (listener and wake-up socket included)
        return 500 + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, MAX_CONNECTIONS + RESERVED_FILES)
    wanted = min(wanted, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return soft if soft != resource.RLIM_INFINITY else wanted


def _make_waitress_server(
    app,
    host: str,
    port: int,
    header_timeout: float,
    idle_timeout: float,
    connection_limit: int,
    threads: int,
    max_body: int,
    token: str,
):
    """A waitress server whose maintenance also closes connections that send their headers too slowly, and
    that answers 401 to a request with a body but without the token as soon as its headers are in (waitress
    would otherwise take the whole body, up to the upload limit, before the app sees the request)."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.server import TcpWSGIServer
    from waitress.utilities import Error

    from panst3r_engine.service.auth import UNAUTHORISED, bearer_matches
    from panst3r_engine.service.errors import error_body

    class Unauthorised(Error):
        code, reason = 401, "Unauthorized"

        def to_response(self, ident=None):  # the API's JSON error, as the app would send it
            body = json.dumps(error_body("unauthorized", UNAUTHORISED)).encode("utf-8")
            return "401 Unauthorized", [("Content-Type", "application/json")], body

    class TimedParser(HTTPRequestParser):
        def __init__(self, adj) -> None:
            super().__init__(adj)
            self.started = time.monotonic()  # made when the request's first byte arrives
            self.checked = False

        def received(self, data: bytes) -> int:
            consumed = super().received(data)
            if self.headers_finished and not self.checked:
                self.checked = True
                if (
                    self.body_rcv is not None
                    and not self.completed
                    and not bearer_matches(self.headers.get("AUTHORIZATION"), token)
                ):
                    self.error, self.completed = Unauthorised(""), True  # the body is never read
            return consumed

    class Channel(HTTPChannel):
        parser_class = TimedParser

    class Server(TcpWSGIServer):
        channel_class = Channel

        def maintenance(self, now: float) -> None:
            super().maintenance(now)  # idle connections (no request in progress) past idle_timeout
            cutoff = time.monotonic() - header_timeout
            for channel in list(self.active_channels.values()):
                request = channel.request
                if request is not None and not request.headers_finished and request.started < cutoff:
                    channel.will_close = True  # a slow-loris: headers trickling in

    return Server(
        app,
        host=host,
        port=port,
        threads=threads,
        connection_limit=connection_limit,
        channel_timeout=idle_timeout,
        cleanup_interval=max(0.2, min(header_timeout, idle_timeout) / 4),
        asyncore_use_poll=True,
        max_request_body_size=max_body,
        max_request_header_size=64 * 1024,
        ident="panst3r-engine",
        expose_tracebacks=False,
        backlog=1024,
        channel_request_lookahead=1,
    )  # keeps reading while a view runs: a hang-up is seen (renders)


class EngineServer:
    """The app on waitress (connection limits and timeouts), with one idempotent graceful stop."""

    def __init__(
        self,
        host: str,
        port: int,
        config: dict,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        threads: int = THREADS,
    ) -> None:
        from panst3r_engine.service.app import create_app

        self.app = create_app({**config, "SHUTDOWN_HOOK": self.stop})
        files = raise_open_file_limit()
        self.connection_limit = max(16, min(MAX_CONNECTIONS, files - RESERVED_FILES))
        max_body = int(self.app.config["MAX_CONTENT_LENGTH"]) + (1 << 20)
        try:
            self.server = _make_waitress_server(
                self.app,
                host,
                port,
                header_timeout,
                idle_timeout,
                self.connection_limit,
                threads,
                max_body,
                self.app.config["TOKEN"],
            )
        except (OSError, ValueError) as exc:
            self.jobs.shutdown(timeout=5)
            reason = getattr(exc, "strerror", None) or "the address is in use or not available here"
            raise ServeError(
                f"cannot listen on {host}:{port} ({reason}); choose another --port (0 picks a free one) or --host"
            ) from exc
        self.host, self.port = host, int(self.server.effective_port)
        self._stop_lock, self._stopping = threading.Lock(), False
        self._stop_serving = threading.Event()
        self._stopped = threading.Event()

    @property
    def jobs(self) -> JobManager:
        return self.app.extensions["panst3r_jobs"]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Run the event loop until :meth:`stop`; then let answers in flight go out (2 s at most) and close."""
        from waitress import wasyncore

        server, connections = self.server, self.server._map
        try:
            while not self._stop_serving.is_set():
                wasyncore.loop(timeout=0.2, map=connections, use_poll=True, count=1)
            server.accepting = False
            with contextlib.suppress(OSError):
                server.socket.close()  # refuse new connections at once
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(
                getattr(c, "requests", None) or getattr(c, "total_outbufs_len", 0) for c in connections.values()
            ):
                wasyncore.loop(timeout=0.05, map=connections, use_poll=True, count=1)
        finally:
            for channel in list(connections.values()):
                with contextlib.suppress(OSError):
                    channel.close()
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            self._stopped.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the jobs, then the server (call from any thread but the one serving)."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        log.info("shutting down")
        self.jobs.shutdown(timeout)
        self._stop_serving.set()
        with contextlib.suppress(OSError, AttributeError):
            self.server.pull_trigger()  # wake the loop now

    def close(self) -> None:
        """Release the listening socket and the threads (after :meth:`serve_forever`, or instead of it)."""
        if not self._stopped.is_set():
            for channel in list(self.server._map.values()):
                with contextlib.suppress(OSError):
                    channel.close()
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            self._stopped.set()


def startup_line(engine: EngineServer, token: str | None) -> dict:
    """The one stdout line clients wait for; ``token`` only when it was generated."""
    line = {
        "event": "listening",
        "host": engine.host,
        "port": engine.port,
        "url": engine.url,
        "version": __version__,
        "api_version": API_VERSION,
        "pid": os.getpid(),
    }
    if token is not None:
        line["token"] = token
    return line


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    jobs_dir: str | None = None,
    weights: str = "v2",
    device: str = "auto",
    preload: bool = False,
    max_upload_mb: float = 4096,
    max_images: int = 2000,
    keep_jobs: int = 20,
    job_ttl_hours: float = 24.0,
    max_megapixels: float = 100,
    max_video_seconds: float = 600.0,
    max_video_megapixels: float = 8.9,
    cluster: str | None = None,
    cluster_cpu_workers: int = 0,
    stdout: TextIO | None = None,
) -> int:
    """Serve until shut down; ``token`` None generates one and prints it on the start-up line."""
    from panst3r_engine.service.auth import generate_token

    _configure_logging()
    _check_weights(weights)
    generated = generate_token() if token is None else None
    config = {
        "TOKEN": token or generated,
        "JOBS_DIR": jobs_dir,
        "WEIGHTS": weights,
        "DEVICE": device,
        "PRELOAD": preload,
        "MAX_UPLOAD_MB": max_upload_mb,
        "MAX_IMAGES": max_images,
        "KEEP_JOBS": keep_jobs,
        "JOB_TTL_HOURS": job_ttl_hours,
        "MAX_MEGAPIXELS": max_megapixels,
        "MAX_VIDEO_SECONDS": max_video_seconds,
        "MAX_VIDEO_MEGAPIXELS": max_video_megapixels,
        "CLUSTER": cluster,
        "CLUSTER_CPU_WORKERS": cluster_cpu_workers,
    }
    engine = EngineServer(host, port, config)
    _install_signal_handlers(engine)
    stream = stdout or sys.stdout
    stream.write(json.dumps(startup_line(engine, generated)) + "\n")
    stream.flush()
    log.info(
        "PanSt3R engine %s listening on %s (jobs in %s, device %s)",
        __version__,
        engine.url,
        engine.app.config["JOBS_DIR"],
        engine.app.config["DEVICE_NAME"],
    )
    try:
        engine.serve_forever()
    finally:
        engine.close()
    log.info("stopped")
    return 0


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per status poll
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" while a job uploads


def _check_weights(weights: str) -> None:
    """Warn at start (jobs will fail with the same sentence) when the weights are not there."""
    from panst3r_engine.model.loading import resolve_weights_path

    try:
        path, _ = resolve_weights_path(weights)
        if not path.exists():
            log.warning("weights file %s does not exist; jobs will fail until it does", path)
    except Exception as exc:  # noqa: BLE001  (only a warning; the service still answers health checks)
        log.warning("%s", exc)


def _install_signal_handlers(engine: EngineServer) -> None:
    """SIGTERM/SIGINT stop gracefully; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, _frame) -> None:
        if engine._stopping:
            log.warning("second %s: exiting without waiting for the running job", signal.Signals(signum).name)
            os._exit(1)
        threading.Thread(target=engine.stop, name="panst3r-shutdown", daemon=True).start()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


# ---------------------------------------------------------------- command line
def add_serve_command(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to the engine's command line (``subparsers`` from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "serve",
        help="run the local HTTP job service (used by the Blender add-on)",
        description=__doc__.replace("``", ""),  # the docstring, without its RST markup
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface, for remote use behind a firewall/VPN; default 127.0.0.1)",
    )
    p.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the access token (default: generate one and print it on the start-up line)",
    )
    p.add_argument("--jobs-dir", default=None, help="folder for job folders (default: <cache>/jobs)")
    p.add_argument("--weights", default="v2", help="v1, v2, a registry id, or a checkpoint path (default v2)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--preload", action="store_true", help="load the model right after start, not at the first job")
    p.add_argument("--max-upload-mb", type=_positive(float), default=4096, help="largest upload (default 4096)")
    p.add_argument("--max-images", type=_positive(int), default=2000, help="most photos per job (default 2000)")
    p.add_argument(
        "--keep-jobs", type=_positive(int, zero=True), default=20, help="finished jobs kept on disk (default 20)"
    )
    p.add_argument(
        "--job-ttl-hours",
        type=_positive(float),
        default=24.0,
        help="finished jobs older than this are deleted (default 24)",
    )
    p.add_argument(
        "--max-megapixels",
        type=_positive(float),
        default=100,
        help="largest photo in megapixels, checked from its header (default 100)",
    )
    p.add_argument(
        "--max-video-seconds",
        type=_positive(float),
        default=600.0,
        help="longest uploaded video in seconds, checked from its header (default 600)",
    )
    p.add_argument(
        "--max-video-megapixels",
        type=_positive(float),
        default=8.9,
        help="largest frame of an uploaded video in megapixels (default 8.9: 4096x2160)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run jobs on Ray workers: ray (start a local Ray), auto (the cluster this machine joined) or "
        "ray://HEAD:10001 (Ray Client); needs panst3r-engine[cluster] (default: in this process)",
    )
    p.add_argument(
        "--cluster-cpu-workers",
        type=_positive(int, zero=True),
        default=0,
        help="with --cluster: this many CPU workers instead of one per GPU (CPU-only clusters, tests)",
    )
    p.set_defaults(func=cmd_serve)
    return p


def _positive(kind: type, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def cmd_serve(args: argparse.Namespace) -> int:
    from panst3r_engine.service.auth import read_token_file

    if getattr(args, "cluster_cpu_workers", 0) and not getattr(args, "cluster", None):
        raise ServeError("--cluster-cpu-workers needs --cluster (ray, auto or ray://HEAD:10001)")
    token = read_token_file(args.token_file) if args.token_file else None
    return serve(
        args.host,
        args.port,
        token,
        jobs_dir=args.jobs_dir,
        weights=args.weights,
        device=args.device,
        preload=args.preload,
        max_upload_mb=args.max_upload_mb,
        max_images=args.max_images,
        keep_jobs=args.keep_jobs,
        job_ttl_hours=args.job_ttl_hours,
        max_megapixels=getattr(args, "max_megapixels", 100),
        max_video_seconds=getattr(args, "max_video_seconds", 600.0),
        max_video_megapixels=getattr(args, "max_video_megapixels", 8.9),
        cluster=getattr(args, "cluster", None),
        cluster_cpu_workers=getattr(args, "cluster_cpu_workers", 0),
    )
