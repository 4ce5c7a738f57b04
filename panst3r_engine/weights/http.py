"""Resumable, MD5-checked HTTP download of one file, with one actionable sentence per failure.

Why separate from the registry: this part knows nothing about weights, only
about HTTP: stream into ``<dest>.part``, resume it with a Range request after a
transport failure (restarting when the server ignores Range or answers 416),
hash while writing, and move into place with ``os.replace`` only once the MD5
matched, so ``dest`` never holds a partial file.

A hostile or broken server is bounded: the body may not exceed ``max_bytes``
(checked on Content-Length before writing, then while writing), the whole
transfer has a deadline (a 1 byte/s drip never ends otherwise), redirects are
followed only to the same host or to listed ones, and a compressed answer
(``Content-Encoding`` other than identity) is refused rather than stored.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from panst3r_engine import __version__
from panst3r_engine.errors import PanSt3RError

Progress = Callable[[int, int | None], None]

MAX_REDIRECTS = 5
MIN_RATE = 100_000  # bytes/s: the default deadline allows at least this slow a connection
DEADLINE_ALLOWANCE_S = 300.0  # plus this much for connecting, redirects and slow starts


def default_deadline(expected_bytes: int | None) -> float | None:
    """Generous whole-transfer deadline: the expected size at ``MIN_RATE`` plus a fixed allowance."""
    return None if expected_bytes is None else DEADLINE_ALLOWANCE_S + expected_bytes / MIN_RATE


class DownloadError(PanSt3RError):
    """A download that failed, with one sentence saying what to do."""

    code = "download"


@dataclass
class _Transfer:
    """What one file transfer has done so far, so an error can say how far it got."""

    url: str
    part: Path
    done: int = 0
    total: int | None = None
    connected: bool = False
    mirror_hint: str = "use a mirror"
    max_bytes: int | None = None
    deadline: float | None = None  # time.monotonic() by which the transfer must be complete
    deadline_s: float | None = None
    hosts: tuple[str, ...] = ()


def fetch(
    url: str,
    final: Path,
    md5: str | None = None,
    progress: Progress | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 30.0,
    mirror_hint: str = "use a mirror",
    max_bytes: int | None = None,
    deadline_s: float | None = None,
    hosts: tuple[str, ...] = (),
) -> None:
    """Download ``url`` to ``final`` via ``final.part``; moved into place only once complete and MD5-correct.

    ``progress(bytes_done, bytes_total_or_None)`` is called per chunk; ``mirror_hint`` ends the messages
    of failures a mirror would avoid. ``max_bytes`` caps the file, ``deadline_s`` the whole transfer
    (default from ``max_bytes``, see :func:`default_deadline`); ``hosts`` lists the other hosts a redirect
    may lead to (``.example.org`` also admits its subdomains).
    """
    deadline_s = default_deadline(max_bytes) if deadline_s is None else deadline_s
    t = _Transfer(url, final.with_name(final.name + ".part"), mirror_hint=mirror_hint, max_bytes=max_bytes)
    t.hosts, t.deadline_s = hosts, deadline_s
    t.deadline = None if deadline_s is None else time.monotonic() + deadline_s
    digest = _stream_with_clear_errors(t, progress, chunk_size, timeout)
    if md5 is not None and digest.hexdigest() != md5.lower():
        t.part.unlink(missing_ok=True)
        raise DownloadError(
            f"{final.name} downloaded from {url} has MD5 {digest.hexdigest()} but {md5} was "
            f"expected, so it was deleted; run the download again, and if it fails again "
            f"the server or a proxy is serving a different file"
        )
    os.replace(t.part, final)


def _stream_with_clear_errors(
    t: _Transfer, progress: Progress | None, chunk_size: int, timeout: float
) -> hashlib._Hash:
    """Turn transport and disk failures into one actionable sentence; the ``.part`` stays for a resume."""
    resume = f"run the same command again to resume from the {t.part.name} file"
    try:
        return _stream(t, progress, chunk_size, timeout)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as exc:
        raise DownloadError(f"no data from {t.url} for {timeout:g} s; check your connection and {resume}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadError(f"the connection to {t.url} was lost after {human_size(t.done)}; {resume}") from exc
    except requests.ConnectionError as exc:
        if exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError):
            raise DownloadError(f"no data from {t.url} for {timeout:g} s; check your connection and {resume}") from exc
        if t.connected:
            raise DownloadError(f"the connection to {t.url} was lost after {human_size(t.done)}; {resume}") from exc
        raise DownloadError(
            f"could not connect to {t.url} (server unreachable or refused the connection); "
            f"check your network, or {t.mirror_hint}"
        ) from exc
    except requests.RequestException as exc:
        raise DownloadError(f"the connection to {t.url} was lost after {human_size(t.done)}; {resume}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            need = f"{human_size(t.total - t.done)} more " if t.total else ""
            raise DownloadError(
                f"the disk is full while writing {t.part}; free {need}space in {t.part.parent} and {resume}"
            ) from exc
        raise DownloadError(f"cannot write {t.part}: {exc.strerror or exc}") from exc


def _stream(t: _Transfer, progress: Progress | None, chunk_size: int, timeout: float) -> hashlib._Hash:
    """Append the missing bytes to the ``.part`` (Range request), restarting when the server cannot resume."""
    for _ in range(3):
        offset = t.part.stat().st_size if t.part.exists() else 0
        t.connected = False
        headers = {"User-Agent": f"panst3r-engine/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with _get(t, headers, timeout) as resp:
            t.connected = True
            if resp.status_code == 416:  # part as long as or longer than the file
                if offset and _content_range(resp)[2] == offset:
                    return md5_file(t.part)
                t.part.unlink(missing_ok=True)
                continue
            _raise_for_status(resp, t)
            start, _, total = _content_range(resp)
            if start != offset and start != 0:  # a 206 for some other range: start over
                t.part.unlink(missing_ok=True)
                continue
            return _write_body(resp, t, start, total, progress, chunk_size)
    raise DownloadError(f"{t.url} keeps answering resume requests wrongly; delete {t.part} and download again")


def _get(t: _Transfer, headers: dict[str, str], timeout: float) -> requests.Response:
    """GET following redirects by hand, so that each hop's host is checked before it is contacted."""
    url = t.url
    for _ in range(MAX_REDIRECTS + 1):
        resp = requests.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
        if not resp.is_redirect:
            return resp
        target = urljoin(url, resp.headers["Location"])
        resp.close()
        _check_redirect(t, url, target)
        url = target
    raise DownloadError(f"{t.url} redirects more than {MAX_REDIRECTS} times; check the URL or {t.mirror_hint}")


def _check_redirect(t: _Transfer, url: str, target: str) -> None:
    """A redirect may stay on the host, or go to a host listed for this download; nowhere else."""
    here, there = urlsplit(url), urlsplit(target)
    host = (there.hostname or "").lower()
    listed = any(host == h or (h.startswith(".") and host.endswith(h)) for h in t.hosts)
    if there.scheme not in ("http", "https") or (here.scheme == "https" and there.scheme != "https"):
        raise DownloadError(f"{t.url} redirects to the insecure address {target}, which was refused; {t.mirror_hint}")
    if host != (here.hostname or "").lower() and not listed:
        raise DownloadError(
            f"{t.url} redirects to the host {host or '?'}, which is not a known source for this file, so the "
            f"download was refused; check the URL or {t.mirror_hint}"
        )


def _write_body(
    resp: requests.Response, t: _Transfer, start: int, total: int | None, progress: Progress | None, chunk_size: int
) -> hashlib._Hash:
    """Stream the body into the part file from ``start`` (0: server ignored Range), hashing as it goes.

    Size, encoding and free space are decided before the first byte is written.
    """
    _check_encoding(resp, t)
    if total is not None and t.max_bytes is not None and total > t.max_bytes:
        t.part.unlink(missing_ok=True)
        raise DownloadError(_too_big(t, f"announces {total} bytes, more", "nothing was downloaded"))
    digest = md5_file(t.part) if start else hashlib.md5(usedforsecurity=False)
    t.done, t.total = start, total
    _check_space(t.part.parent, None if total is None else total - start)
    with open(t.part, "ab" if start else "wb") as f:
        for chunk in _chunks(resp, chunk_size):
            _check_limits(t, len(chunk))
            f.write(chunk)
            digest.update(chunk)
            t.done += len(chunk)
            if progress is not None:
                progress(t.done, t.total)
    if total is not None and t.done != total:
        raise requests.ConnectionError(f"got {t.done} of {total} bytes")
    return digest


def _chunks(resp: requests.Response, chunk_size: int):
    """Body bytes as they arrive, undecoded: ``read1`` returns after one socket read, so a slow drip
    still comes back to the deadline check instead of blocking until ``chunk_size`` bytes have come."""
    read = getattr(resp.raw, "read1", None) or resp.raw.read  # read1: urllib3 >= 2.3
    while chunk := read(chunk_size, decode_content=False):
        yield chunk


def _check_encoding(resp: requests.Response, t: _Transfer) -> None:
    """``Accept-Encoding: identity`` was asked for; a compressed answer would not match its checksum."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding != "identity":
        raise DownloadError(
            f"{t.url} answered with Content-Encoding {encoding} although an unencoded file was requested, "
            f"so nothing was saved; a proxy may be rewriting downloads, so bypass it or {t.mirror_hint}"
        )


def _check_limits(t: _Transfer, incoming: int) -> None:
    """Stop an endless body (deleting it) or a transfer past its deadline (keeping it for a resume)."""
    if t.max_bytes is not None and t.done + incoming > t.max_bytes:
        t.part.unlink(missing_ok=True)
        raise DownloadError(_too_big(t, "sent more", "the download was stopped and deleted"))
    if t.deadline is not None and time.monotonic() > t.deadline:
        raise DownloadError(
            f"the download from {t.url} did not finish within {t.deadline_s:g} s ({human_size(t.done)} of "
            f"{human_size(t.total)} so far); run the same command again to resume from the {t.part.name} file, "
            f"with a larger --deadline on a slow connection, or {t.mirror_hint}"
        )


def _too_big(t: _Transfer, what: str, outcome: str) -> str:
    return (
        f"{t.url} {what} than the {t.max_bytes} bytes ({human_size(t.max_bytes)}) this file can have, so "
        f"{outcome}; the server or a proxy is serving a different file, so check the URL or {t.mirror_hint}"
    )


def _content_range(resp: requests.Response) -> tuple[int, int | None, int | None]:
    """(first byte, last byte, total) of the body; a 200 starts at 0 and its total is Content-Length."""
    header = resp.headers.get("Content-Range", "")
    if resp.status_code in (206, 416) and header.startswith("bytes "):
        span, _, total = header[6:].partition("/")
        first, _, last = span.partition("-")
        return _int_or_none(first) or 0, _int_or_none(last), _int_or_none(total)
    return 0, None, _int_or_none(resp.headers.get("Content-Length", ""))


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _raise_for_status(resp: requests.Response, t: _Transfer) -> None:
    if resp.status_code in (200, 206):
        return
    if resp.status_code == 404:
        raise DownloadError(
            f"{t.url} answered HTTP 404 Not Found; the file may have moved, so check the URL or {t.mirror_hint}"
        )
    raise DownloadError(
        f"{t.url} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip()
        + f"; try again later or {t.mirror_hint}"
    )


def _check_space(folder: Path, needed: int | None) -> None:
    """Fail before downloading when the announced size cannot fit, rather than after gigabytes."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed is not None and needed > free:
        raise OSError(errno.ENOSPC, f"{human_size(needed)} needed, {human_size(free)} free")


def md5_file(path: Path, chunk: int = 1 << 22) -> hashlib._Hash:
    """MD5 of a file (own copy: importing checkpoints.file_md5 would pull in torch)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest


def human_size(n: float | None) -> str:
    """Decimal units, as download tools and disk vendors show them."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
