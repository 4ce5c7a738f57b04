"""The engine service client (API v1, DESIGN.md §5) and the local engine subprocess. No bpy.

A local engine is ``python -m panst3r_engine serve --host 127.0.0.1 --port 0 ...``
started in its own process group; its first stdout line is a JSON object
``{"event": "listening", "port", "url", "token", "version", "api_version", "pid"}``.
Its stderr (and any later stdout) goes to a log file whose path every error
names. A remote engine is a URL and a token. Every failure raises
:class:`EngineError` with a sentence a user can act on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

API_VERSION = 1
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_PRELUDE_LINES = 50  # non-JSON stdout lines tolerated before the "listening" line

# Everything an engine sends is untrusted (a remote engine may be anyone's): ids are checked against the
# service's own format before they reach a URL or a path, replies are read with a size and a time bound,
# and local folders are named and created by the add-on itself.
JOB_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")  # panst3r_engine/service/records.py new_job_id()
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
MAX_REPLY_BYTES = 1 << 20  # a JSON reply (status, errors, health)
MAX_TEXT = 500  # characters of an engine-sent message shown to the user
MAX_BUNDLE_BYTES = 64 << 30  # largest result archive, and largest extracted result
MAX_BUNDLE_FILES = 100_000
MIN_FREE_BYTES = 512 << 20  # disk space left free after a download and its extraction
REPLY_SECONDS = 120.0  # a whole JSON reply must arrive within this (a trickling engine cannot hold a job)
UNSAFE_NAME = re.compile(r"[\\:\x00]")


class EngineError(RuntimeError):
    """A failure talking to or running the engine, as a sentence a user can act on."""


def is_local_url(url: str) -> bool:
    """True when url points at this machine (no online access needed)."""
    return (urlparse(url).hostname or "") in LOCAL_HOSTS


def _tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file ('' when unreadable)."""
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def check_job_id(job_id: object) -> str:
    """``job_id`` when it has the service's id format, else EngineError (it will be used in URLs and paths)."""
    if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
        return job_id
    shown = repr(job_id)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise EngineError(
        f"{shown} is not a PanSt3R job id (those look like 20260131-120000-a1b2c3); check that the "
        "engine URL points at a PanSt3R engine of the same version as the add-on"
    )


def _text(value: object, limit: int = MAX_TEXT) -> str:
    """An engine-sent value as a short single-line string for the UI."""
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unsafe_member(info: zipfile.ZipInfo) -> bool:
    """A member that could land outside the extraction folder, or a link."""
    name = info.filename
    parts = name.split("/")
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    return (
        is_link
        or not name
        or name.startswith("/")
        or ".." in parts
        or UNSAFE_NAME.search(name) is not None
        or os.path.isabs(name)
    )


def _safe_extract(archive: Path, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> None:
    """Extract a zip into the empty folder ``dest``, refusing absolute paths, '..' escapes, symbolic links,
    and archives that would unpack to more than ``max_bytes`` or MAX_BUNDLE_FILES files (decided from the
    directory before anything is written; zipfile never reads a member past its declared size)."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_BUNDLE_FILES:
            raise EngineError(
                f"the bundle archive from the engine holds {len(members)} files, more than the "
                f"{MAX_BUNDLE_FILES} a result can have; it was not extracted"
            )
        total = 0
        for info in members:
            target = (root / info.filename).resolve()
            if _unsafe_member(info) or (target != root and root not in target.parents):
                raise EngineError(
                    f"the bundle archive from the engine contains an unsafe path "
                    f"{_text(repr(info.filename), 120)}; it was not extracted"
                )
            total += info.file_size
        if total > max_bytes:
            raise EngineError(
                f"the bundle archive from the engine would unpack to {total / 2**30:.1f} GB, more "
                f"than the {max_bytes / 2**30:.1f} GB this disk can take; free disk space and "
                "download it again"
            )
        zf.extractall(root)


def _claim_folder(dest: Path) -> Path:
    """Create ``dest``, or the first free ``dest-1``, ``dest-2``, ...: a new empty folder that this call made.

    ``mkdir`` fails when the name exists, so nothing already there is ever reused, replaced or deleted.
    """
    for n in range(1000):
        candidate = dest if n == 0 else dest.with_name(f"{dest.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise EngineError(f"{dest} and 999 numbered folders next to it exist already; move old results away")


def _bundle_root(folder: Path) -> Path:
    """The folder holding manifest.json: the extraction folder itself or its single sub-folder."""
    if (folder / "manifest.json").is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / "manifest.json").is_file()]
    if len(subs) == 1:
        return subs[0]
    raise EngineError(f"the bundle archive from the engine has no manifest.json (extracted to {folder})")


class EngineClient:
    """HTTP client of one engine (local or remote); every request carries the bearer token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        log_path: Path | None = None,
        process: subprocess.Popen | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.log_path, self.process = log_path, process
        self.session = requests.Session()

    # ------------------------------------------------------------ plumbing
    def _gone(self, exc: Exception) -> EngineError:
        if self.process is not None:
            code = self.process.poll()
            state = f"stopped (exit code {code})" if code is not None else "does not answer"
            return EngineError(f"the engine {state}; see its log at {self.log_path}")
        return EngineError(
            f"cannot reach the engine at {self.url} ({type(exc).__name__}); check the URL in the "
            "add-on preferences and that the engine is running"
        )

    def _error(self, resp: requests.Response, what: str, sentences: dict[str, str] | None = None) -> EngineError:
        if resp.status_code == 401:
            resp.close()
            return EngineError(
                f"the engine at {self.url} refused the access token; check the token in the add-on "
                "preferences (a local engine makes a new one each start)"
            )
        try:
            raw = self._read(resp, what, MAX_REPLY_BYTES)
        except EngineError as exc:
            return exc
        try:
            error = json.loads(raw)["error"]
            message, code = _text(error["message"]), error.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            body = _text(raw[:200].decode("utf-8", "replace"), 200)
            message, code = f"HTTP {resp.status_code} {_text(resp.reason, 60)}: {body}", None
        if sentences and isinstance(code, str) and code in sentences:
            return EngineError(sentences[code])
        return EngineError(f"{message} ({what})" if message else f"the engine failed to {what}")

    def _read(self, resp: requests.Response, what: str, limit: int, seconds: float = REPLY_SECONDS) -> bytes:
        """The whole body of a streamed reply, refusing one over ``limit`` bytes or slower than ``seconds``."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            resp.close()
            raise EngineError(
                f"the engine's reply is larger than the {limit} bytes expected ({what}, "
                f"{int(declared)} bytes); check that the URL points at a PanSt3R engine"
            )
        chunks, size, deadline = [], 0, time.monotonic() + seconds
        try:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > limit:
                    raise EngineError(
                        f"the engine's reply is larger than the {limit} bytes expected ({what}); "
                        "check that the URL points at a PanSt3R engine"
                    )
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"the engine's reply took longer than {seconds:.0f} s to arrive ({what}); "
                        "it may be overloaded, try again"
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise self._gone(exc) from None
        finally:
            resp.close()
        return b"".join(chunks)

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        timeout: float | None = None,
        sentences: dict[str, str] | None = None,
        **kwargs,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        kwargs.setdefault("stream", True)  # bodies are read by _read / download_bundle, with bounds
        try:
            resp = self.session.request(
                method,
                self.url + path,
                headers=headers,
                timeout=timeout or self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.Timeout:
            raise EngineError(
                f"the engine at {self.url} did not answer within {timeout or self.timeout:.0f} s "
                f"({what}); it may be overloaded, try again"
            ) from None
        except requests.RequestException as exc:
            raise self._gone(exc) from None
        if resp.status_code >= 400:
            raise self._error(resp, what, sentences)
        return resp

    def _json(self, resp: requests.Response, what: str, limit: int = MAX_REPLY_BYTES) -> dict:
        raw = self._read(resp, what, limit)
        try:
            body = json.loads(raw)
        except ValueError:
            raise EngineError(f"the engine sent a reply that is not JSON ({what})") from None
        if not isinstance(body, dict):
            raise EngineError(f"the engine sent an unexpected reply ({what})")
        return body

    # ------------------------------------------------------------ API v1
    def health(self) -> dict:
        """``GET /v1/health``: version, device, model loaded, queue length."""
        return self._json(self._request("GET", "/v1/health", "check the engine's health", timeout=10), "health")

    def submit(self, images: list[Path], options: dict) -> str:
        """``POST /v1/jobs``: upload the photos and options; returns the job id."""
        with contextlib.ExitStack() as stack:
            files = [("options", (None, json.dumps(options)))]  # a plain form field; always multipart
            try:
                files += [
                    ("images", (Path(path).name, stack.enter_context(open(path, "rb")), "application/octet-stream"))
                    for path in images
                ]
            except OSError as exc:
                raise EngineError(
                    f"cannot read the photo {exc.filename} ({exc.strerror}); check that it exists"
                ) from None
            resp = self._request("POST", "/v1/jobs", "submit the job", files=files, timeout=max(self.timeout, 300))
        if "id" not in (body := self._json(resp, "submit")):
            raise EngineError("the engine accepted the job but returned no job id; update the engine")
        return check_job_id(body["id"])

    def status(self, job_id: str) -> dict:
        """``GET /v1/jobs/{id}``: state, stage, fraction, message, error (checked and shortened)."""
        path = f"/v1/jobs/{check_job_id(job_id)}"
        body = self._json(self._request("GET", path, "ask for the job's progress"), "status")
        state = body.get("state")
        if state not in JOB_STATES:
            raise EngineError(
                f"the engine reported the unknown job state {_text(repr(state), 60)}; update the "
                "engine and the add-on to matching versions"
            )
        fraction = body.get("fraction")
        ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and math.isfinite(fraction)
        error = body.get("error")
        if isinstance(error, dict):
            error = {"code": _text(error.get("code"), 60), "message": _text(error.get("message"))}
        elif error is not None:
            error = _text(error)
        return {
            **body,
            "id": job_id,
            "state": state,
            "stage": _text(body.get("stage"), 60),
            "fraction": min(1.0, max(0.0, float(fraction))) if ok else 0.0,
            "message": _text(body.get("message"), 200),
            "error": error,
        }

    def cancel(self, job_id: str) -> None:
        """``DELETE /v1/jobs/{id}``."""
        resp = self._request("DELETE", f"/v1/jobs/{check_job_id(job_id)}", "cancel the job")
        resp.close()

    def download_bundle(self, job_id: str, dest: Path, cancel: threading.Event | None = None) -> Path:
        """``GET /v1/jobs/{id}/bundle``: download the zip and extract it into ``dest``; returns the bundle folder.

        ``dest`` is a folder name chosen by the caller; when it exists already (the add-on never deletes a
        folder it did not create) the result goes to a new sibling ``<name>-1``, ``<name>-2``, ... instead.
        The archive is a hidden sibling with a random name, removed afterwards; the download stops when it
        grows past the free disk space or MAX_BUNDLE_BYTES, or when ``cancel`` is set, and a failed
        extraction removes only the folder this call made.
        """
        path = f"/v1/jobs/{check_job_id(job_id)}/bundle"
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(dest.parent).free - MIN_FREE_BYTES
        except OSError as exc:
            raise EngineError(
                f"cannot write the result to {dest.parent} ({exc.strerror or exc}); choose a writable folder"
            ) from None
        archive = dest.parent / f".{dest.name}.download-{secrets.token_hex(6)}.zip"
        final, made_archive = None, False
        try:
            limit = min(MAX_BUNDLE_BYTES, max(free, 0))
            with self._request("GET", path, "download the result", timeout=max(self.timeout, 120)) as resp:
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise EngineError(
                        f"the result is {int(declared) / 2**30:.1f} GB, more than the "
                        f"{limit / 2**30:.1f} GB that can be stored here; free disk space and run "
                        "the job again"
                    )
                with open(archive, "xb") as fh:  # "x": never write into a file that was already there
                    made_archive, size = True, 0
                    for chunk in resp.iter_content(chunk_size=1 << 20):
                        size += len(chunk)
                        if size > limit:
                            raise EngineError(
                                f"the result grew past the {limit / 2**30:.1f} GB that can be "
                                "stored here; free disk space and run the job again"
                            )
                        if cancel is not None and cancel.is_set():
                            raise EngineError("the download of the result was cancelled")
                        fh.write(chunk)
            with zipfile.ZipFile(archive):  # a bad archive is refused before any folder is made
                pass
            final = _claim_folder(dest)
            _safe_extract(archive, final, max(0, limit - size))
            inner = _bundle_root(final).relative_to(final)
        except BaseException as exc:
            if final is not None:  # made by this call: remove the partial result
                shutil.rmtree(final, ignore_errors=True)
            if isinstance(exc, zipfile.BadZipFile):
                raise EngineError("the result the engine sent is not a valid zip archive; run the job again") from None
            if isinstance(exc, requests.RequestException):
                raise self._gone(exc) from None
            if isinstance(exc, OSError):
                raise EngineError(
                    f"cannot write the result to {dest} ({exc.strerror or exc}); check the free disk space"
                ) from None
            raise
        finally:
            if made_archive:
                with contextlib.suppress(OSError):
                    archive.unlink(missing_ok=True)
        return final / inner

    def render_view(self, job_id: str, K, cam_to_world, width: int, height: int) -> dict:
        """``POST /v1/jobs/{id}/render``: one view of the job's Gaussian splats.

        Args:
            K: [3, 3] intrinsics in pixels of the width x height image (pixel centres at +0.5).
            cam_to_world: [4, 4] camera pose in the bundle's world, OpenCV axes (x right, y down, z forward).
        Returns:
            ``{"rgb_png": bytes, "labels_png": bytes (COCO-panoptic ids), "width": int, "height": int}``.
        """
        job_id = check_job_id(job_id)
        body = {
            "K": [[float(x) for x in row] for row in K],
            "cam_to_world": [[float(x) for x in row] for row in cam_to_world],
            "width": int(width),
            "height": int(height),
        }
        sentences = {
            "no_splats": "this result has no splats; run again with Gaussian Splats on",
            "unknown_job": f"the engine no longer has job {job_id} (it keeps recent jobs only); run it "
            "again to render new views",
        }
        resp = self._request(
            "POST",
            f"/v1/jobs/{job_id}/render",
            "render the view",
            json=body,
            timeout=max(self.timeout, 600),
            sentences=sentences,
        )
        # two PNGs of at most 4 bytes a pixel (plus zlib's worst case), base64: decided before reading
        limit = MAX_REPLY_BYTES + 2 * (4 * int(width) * int(height) + (1 << 16)) * 4 // 3 * 11 // 10
        reply = self._json(resp, "render", limit)
        try:
            out = {key: base64.b64decode(reply[key], validate=True) for key in ("rgb_png", "labels_png")}
            out.update(width=int(reply["width"]), height=int(reply["height"]))
        except (KeyError, TypeError, ValueError):  # binascii.Error is a ValueError
            raise EngineError("the engine's render reply lacks its images; update the engine") from None
        if (out["width"], out["height"]) != (int(width), int(height)):
            raise EngineError(
                f"the engine rendered {out['width']}x{out['height']} pixels instead of the "
                f"{int(width)}x{int(height)} asked for; update the engine"
            )
        return out

    def shutdown(self) -> None:
        """``POST /v1/shutdown``."""
        self._request("POST", "/v1/shutdown", "shut the engine down", timeout=5).close()


@dataclass
class LocalConfig:
    """How to start a local engine."""

    python: str
    log_dir: Path
    weights: str = "v2"
    device: str = "auto"
    jobs_dir: Path | None = None
    cache_dir: str = ""  # PANST3R_HOME for the engine ('' = the engine's default)
    startup_timeout: float = 120.0
    command: list[str] | None = None  # replaces [python, -m, panst3r_engine] (tests use a stand-in)
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        head = self.command or [self.python, "-m", "panst3r_engine"]
        argv = [
            *head,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--weights",
            self.weights,
            "--device",
            self.device,
        ]
        return argv + (["--jobs-dir", str(self.jobs_dir)] if self.jobs_dir else [])

    def key(self) -> tuple:
        """Settings that need a restart when they change."""
        return (tuple(self.argv()), self.cache_dir, tuple(sorted(self.env.items())))


def process_group_kwargs() -> dict:
    """Start the engine in its own process group so cancelling reaches its children."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class LocalEngine:
    """A running engine subprocess and its client."""

    def __init__(self, process: subprocess.Popen, info: dict, log_path: Path) -> None:
        self.process, self.info, self.log_path = process, info, log_path
        url = info.get("url") or f"http://127.0.0.1:{info['port']}"
        self.client = EngineClient(url, str(info.get("token", "")), log_path=log_path, process=process)

    @classmethod
    def start(cls, config: LocalConfig) -> LocalEngine:
        """Start the engine and wait for its "listening" line (raises EngineError on failure or timeout)."""
        if not config.command and not Path(config.python).is_file():
            raise EngineError(
                f"the engine's Python {config.python!r} does not exist; create the engine "
                "environment or set the Python path in the add-on preferences"
            )
        config.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = config.log_dir / "engine.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **config.env}
        if config.cache_dir:
            env["PANST3R_HOME"] = config.cache_dir
        with open(log_path, "ab") as log:
            try:
                process = subprocess.Popen(
                    config.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    **process_group_kwargs(),
                )
            except OSError as exc:
                raise EngineError(f"cannot start the engine with {config.argv()[0]} ({exc.strerror or exc})") from None
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump_stdout, args=(process, lines, log_path), daemon=True).start()
        try:
            info = _wait_listening(process, lines, log_path, config.startup_timeout)
        except BaseException:
            kill_process_group(process)
            raise
        return cls(process, info, log_path)

    @property
    def url(self) -> str:
        return self.client.url

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the engine to shut down, then end its process group if it lingers."""
        if self.alive():
            try:
                self.client.shutdown()
                self.process.wait(timeout)
            except (EngineError, subprocess.TimeoutExpired):
                pass
        kill_process_group(self.process)


def _pump_stdout(process: subprocess.Popen, lines: queue.Queue, log_path: Path) -> None:
    """Hand stdout lines to the starter until 'listening' is seen, then copy the rest into the log."""
    handed_over = False
    for raw in process.stdout:
        text = raw.decode("utf-8", errors="replace").rstrip("\n")
        if not handed_over:
            lines.put(text)
            handed_over = text.lstrip().startswith("{") and '"listening"' in text
            continue
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(text + "\n")
    lines.put(None)


def _wait_listening(process: subprocess.Popen, lines: queue.Queue, log_path: Path, timeout: float) -> dict:
    deadline, prelude = time.monotonic() + timeout, 0
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
            if time.monotonic() > deadline:
                raise EngineError(
                    f"the engine did not start within {timeout:.0f} s; see its log at {log_path}:\n{_tail(log_path)}"
                ) from None
        if line is None or (line == "" and process.poll() is not None):
            process.wait(5)
            raise EngineError(
                f"the engine exited with code {process.returncode} before it was ready; "
                f"see its log at {log_path}:\n{_tail(log_path)}"
            )
        if not line.strip():
            continue
        try:
            info = json.loads(line)
        except ValueError:
            info = None
        if isinstance(info, dict) and info.get("event") == "listening":
            break
        prelude += 1
        if prelude > MAX_PRELUDE_LINES:
            raise EngineError(
                f"the engine printed {prelude} lines without announcing its port; is this a "
                f"PanSt3R engine? Last line: {line[:200]!r}"
            )
    if info.get("api_version") != API_VERSION:
        raise EngineError(
            f"the engine speaks service API version {info.get('api_version')!r}, but this add-on "
            f"needs version {API_VERSION}; install matching versions of the engine and the add-on"
        )
    if not info.get("url") and not isinstance(info.get("port"), int):
        raise EngineError("the engine's start-up line names no port or URL")
    if info.get("url") and not (isinstance(info["url"], str) and is_local_url(info["url"])):
        raise EngineError(
            f"the local engine announced the address {_text(repr(info['url']), 80)}, which is not on "
            "this machine; check the engine's Python path in the add-on preferences"
        )
    return info


def kill_process_group(process: subprocess.Popen) -> None:
    """End the process and its group (SIGTERM, then SIGKILL after 3 s)."""
    if process.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            process.terminate()
        else:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(3)
    except (OSError, subprocess.TimeoutExpired):
        try:
            if sys.platform == "win32":
                process.kill()
            else:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(3)
        except (OSError, subprocess.TimeoutExpired):
            pass
