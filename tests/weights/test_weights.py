"""Weights cache and downloads against a real local HTTP server (Range, cuts, 404, stalls, shutdown,
endless bodies, drips, redirects, compressed answers, tampered folder files)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import struct
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from panst3r_engine import weights as w
from panst3r_engine.config import ENV_BASE_URL, ENV_HOME, ENV_OFFLINE
from panst3r_engine.weights import http as httpfetch
from panst3r_engine.weights.cli import ProgressBar, add_weights_commands
from panst3r_engine.weights.download import staging_dir
from panst3r_engine.weights.licence import licence_record
from panst3r_engine.weights.registry import FilePin

DATA = random.Random(0).randbytes(2_000_000)
MD5 = hashlib.md5(DATA).hexdigest()
CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv: FakeServer = self.server.owner
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if self.path in srv.redirects:
            self._send(302, {"Location": srv.redirects[self.path], "Content-Length": "0"})
            return
        if srv.endless_blocks:
            self._endless(srv.endless_blocks)
            return
        if srv.drip and body is not None:
            self._drip(srv, body)
            return
        if body is None:
            self._send(404, {"Content-Length": "0"})
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(body):
                self._send(416, {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
                return
            self._send(206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
        else:
            self._send(200, {})
        payload = body[start:]
        cut, srv.cut_after = srv.cut_after, None
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if srv.stall:
            srv.release.wait(10)
        if cut is not None:
            self.close_connection = True  # the socket closes before Content-Length bytes arrived

    def _endless(self, blocks: int) -> None:
        """A body without Content-Length that goes on until the client hangs up (or ``blocks`` x 64 KB)."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block = bytes(64 * 1024)
        for _ in range(blocks):
            self.wfile.write(block)

    def _drip(self, srv: FakeServer, body: bytes) -> None:
        """The announced body at 20 bytes/s: at most 200 bytes (10 s), or until the test releases it."""
        self._send(200, {})
        self.close_connection = True
        for i in range(200):
            if srv.release.wait(0.05):
                return
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()

    def _send(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        headers = {**self.server.owner.extra_headers.get(self.path, {}), **headers}
        body = self.server.owner.files.get(self.path, b"")
        start = int(headers["Content-Range"][6:].split("-")[0]) if code == 206 else 0
        headers.setdefault("Content-Length", str(len(body) - start))
        for key, value in {"Accept-Ranges": "bytes", **headers}.items():
            self.send_header(key, value)
        self.end_headers()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up mid-body (the point of several tests) are not errors here."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1 with switches for the failures a real download meets."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # next response: send this many body bytes, then drop the connection
        self.ignore_range = False
        self.stall = False  # send the body (or its cut part), then hang until released
        self.endless_blocks = 0  # > 0: answer every request with this many 64 KB blocks and no Content-Length
        self.drip = False  # send the body one byte every 50 ms
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.extra_headers: dict[str, dict[str, str]] = {}  # path -> headers added to its answers
        self.release = threading.Event()
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join()
            self.httpd.server_close()


def _safetensors(n_floats: int = 1000) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(4 * n_floats)


SIGLIP = {
    f"/siglip-base-patch16-224/{name}": (_safetensors() if name.endswith(".safetensors") else b"{}")
    for name in w.REGISTRY["siglip-text"].files
}


def _pin(body: bytes, with_hash: bool = True) -> FilePin:
    return FilePin(len(body), hashlib.sha256(body).hexdigest() if with_hash else None)


# The text tower entry with pins for the test files; model.safetensors has a size but no hash, like a file
# whose hash could not be found, so the safetensors self-check is what checks it beyond its size.
SIGLIP_ENTRY = replace(
    w.REGISTRY["siglip-text"],
    pins=tuple(
        (name, _pin(SIGLIP[f"/siglip-base-patch16-224/{name}"], not name.endswith(".safetensors")))
        for name in w.REGISTRY["siglip-text"].files
    ),
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    for name in (ENV_OFFLINE, ENV_BASE_URL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setitem(w.REGISTRY, "siglip-text", SIGLIP_ENTRY)  # pins that fit the test files
    srv = FakeServer({"/fake.pth": DATA, **SIGLIP})
    yield srv
    srv.stop()


@pytest.fixture
def entry(server, home) -> w.WeightsEntry:
    """A registry-style entry for the fake file, with its licence already accepted."""
    w.accept_licence("panst3r-noncommercial")
    return w.WeightsEntry(
        "test-weights",
        "fake.pth",
        f"{server.url}/fake.pth",
        MD5,
        len(DATA),
        "panst3r-noncommercial",
        "2 MB of random bytes",
    )


def test_full_download_verifies_md5_and_reports_progress(entry, home):
    seen = []
    path = w.download(entry, progress=lambda done, total: seen.append((done, total)), chunk_size=CHUNK)
    assert path == home / "weights" / "fake.pth" and path.read_bytes() == DATA
    assert not path.with_name("fake.pth.part").exists()
    assert seen[-1] == (len(DATA), len(DATA)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert w.verify(entry)[0]


def test_interrupted_download_resumes_with_range(entry, server):
    server.cut_after = 700_000
    with pytest.raises(w.WeightsError, match="lost after .*run the same command again to resume"):
        w.download(entry, chunk_size=CHUNK)
    part = w.weights_path(entry).with_name("fake.pth.part")
    kept = part.stat().st_size
    assert 0 < kept <= 700_000 and not w.weights_path(entry).exists()
    assert part.read_bytes() == DATA[:kept]
    assert w.download(entry, chunk_size=CHUNK).read_bytes() == DATA
    assert server.requests[-1] == ("/fake.pth", f"bytes={kept}-")
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(entry, server):
    part = w.weights_path(entry).with_name("fake.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"junk that is not a prefix of the file")
    server.ignore_range = True
    assert w.download(entry, chunk_size=CHUNK).read_bytes() == DATA
    assert server.requests == [("/fake.pth", "bytes=37-")]


def test_416_with_a_part_longer_than_the_file_restarts(entry, server):
    part = w.weights_path(entry).with_name("fake.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA + b"extra")
    assert w.download(entry).read_bytes() == DATA
    assert [r for _, r in server.requests] == [f"bytes={len(DATA) + 5}-", None]


def test_complete_part_is_finished_without_downloading_again(entry, server):
    part = w.weights_path(entry).with_name("fake.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)
    assert w.download(entry).read_bytes() == DATA
    assert len(server.requests) == 1  # one 416 "bytes */N" answer, no body


def test_wrong_md5_deletes_the_part_and_names_both_sums(entry):
    bad = replace(entry, md5="0" * 32)
    with pytest.raises(w.WeightsError) as exc:
        w.download(bad)
    assert MD5 in str(exc.value) and "0" * 32 in str(exc.value)
    assert list(w.weights_dir().iterdir()) == []


def test_404_names_status_and_url(entry, server):
    missing = replace(entry, url=f"{server.url}/nope.pth")
    with pytest.raises(w.WeightsError, match=re.escape(f"{server.url}/nope.pth answered HTTP 404")):
        w.download(missing)
    assert not w.weights_path(missing).exists()


def test_server_gone_is_a_clear_connection_error(entry, server):
    server.stop()
    with pytest.raises(w.WeightsError, match=r"could not connect to http://127\.0\.0\.1:\d+/fake\.pth") as exc:
        w.download(entry, timeout=5)
    assert str(exc.value).endswith(f"or download fake.pth from {entry.url} and place it at {w.weights_path(entry)}")
    assert not w.weights_path(entry).exists()


def test_stalled_server_times_out_and_keeps_the_part(entry, server):
    server.cut_after, server.stall = 300_000, True
    with pytest.raises(w.WeightsError, match=r"no data from .* for 0\.5 s"):
        w.download(entry, chunk_size=CHUNK, timeout=0.5)
    server.release.set()
    assert w.weights_path(entry).with_name("fake.pth.part").stat().st_size > 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_while_writing(entry):
    part = w.weights_path(entry).with_name("fake.pth.part")
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(w.WeightsError, match="disk is full while writing"):
        w.download(entry, chunk_size=CHUNK)
    assert not w.weights_path(entry).exists()


def test_not_enough_space_is_refused_before_downloading(entry, monkeypatch):
    monkeypatch.setattr(httpfetch.shutil, "disk_usage", lambda _: type("U", (), {"free": 1000})())
    with pytest.raises(w.WeightsError, match=r"disk is full .*free 2\.0 MB more space"):
        w.download(entry)


def test_licence_must_be_accepted_once(server, home):
    entry = w.WeightsEntry("t", "fake.pth", f"{server.url}/fake.pth", MD5, None, "panst3r-noncommercial", "")
    with pytest.raises(w.LicenseNotAccepted) as exc:
        w.download(entry)
    assert "Non-Commercial" in str(exc.value) and "--accept-license" in str(exc.value)
    assert server.requests == [] and not w.weights_path(entry).exists()
    w.download(entry, accept_license=True)
    assert "accepted 20" in licence_record("panst3r-noncommercial").read_text()
    w.weights_path(entry).unlink()
    assert w.download(entry).read_bytes() == DATA  # remembered: no flag needed


def test_offline_mode_names_the_file_and_place(entry, server, monkeypatch):
    monkeypatch.setenv(ENV_OFFLINE, "1")
    with pytest.raises(w.WeightsError) as exc:
        w.download(entry)
    message = str(exc.value)
    assert "offline" in message and entry.url in message and str(w.weights_path(entry)) in message
    assert server.requests == []
    siglip = w.REGISTRY["siglip-text"]
    with pytest.raises(
        w.WeightsError,
        match=re.escape(
            f"model.safetensors, spiece.model, tokenizer_config.json, "
            f"special_tokens_map.json from {siglip.url}/ into the folder"
        ),
    ):
        w.download(siglip)
    w.weights_path(entry).parent.mkdir(parents=True)
    w.weights_path(entry).write_bytes(DATA)  # placed by hand: offline download just returns it
    assert w.download(entry) == w.weights_path(entry)


def test_cache_location(home, monkeypatch, tmp_path):
    assert w.weights_path("v2") == home / "weights" / "panst3r_v2_512_5ds.pth"
    assert licence_record("x") == home / "licenses" / "x.accepted"
    monkeypatch.delenv(ENV_HOME)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert w.weights_dir() == tmp_path / "xdg" / "panst3r" / "weights"


def test_resolve_weights_ids_aliases_and_paths(home, tmp_path):
    with pytest.raises(w.WeightsError) as exc:
        w.resolve_weights("v2")
    message = str(exc.value)
    for part in (
        "panst3r_v2_512_5ds.pth",
        w.REGISTRY["panst3r-v2-512"].url,
        str(w.weights_path("v2")),
        "python -m panst3r_engine weights download panst3r-v2-512 --accept-license",
    ):
        assert part in message
    w.weights_path("v1").parent.mkdir(parents=True)
    w.weights_path("v1").write_bytes(b"x")
    assert w.resolve_weights("v1") == w.resolve_weights("panst3r-v1-512") == w.weights_path("v1")
    own = tmp_path / "mine.pth"
    own.write_bytes(b"x")
    assert w.resolve_weights(str(own)) == own
    with pytest.raises(w.WeightsError, match="neither an existing file nor a weights id"):
        w.resolve_weights(str(tmp_path / "missing.pth"))


def test_base_url_environment_variable_points_to_a_mirror(entry, server, monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, server.url + "/")
    unreachable = replace(entry, url="http://127.0.0.1:9/official/fake.pth")
    assert w.download(unreachable).read_bytes() == DATA
    assert server.requests == [("/fake.pth", None)]


def test_siglip_folder_download_and_verify(server, home):
    path = w.download("siglip-text", base_url=server.url)  # Apache-2.0: no acceptance needed
    assert path == home / "weights" / "siglip-base-patch16-224"
    assert sorted(p.name for p in path.iterdir()) == sorted(w.REGISTRY["siglip-text"].files)
    assert w.verify("siglip-text")[0]
    model = path / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-10])
    ok, message = w.verify("siglip-text")
    assert not ok and "model.safetensors has" in message
    model.unlink()
    server.requests.clear()
    w.download("siglip-text", base_url=server.url)  # only the missing file is fetched again
    assert server.requests == [("/siglip-base-patch16-224/model.safetensors", None)]
    assert w.verify("siglip-text")[0]


def test_verify_and_list(entry, home):
    ok, message = w.verify(entry)
    assert not ok and "not downloaded" in message
    w.download(entry)
    assert w.verify(entry)[0]
    w.weights_path(entry).write_bytes(DATA[:-1] + b"!")
    ok, message = w.verify(entry)
    assert not ok and MD5 in message and "delete it" in message
    with pytest.raises(w.WeightsError, match="delete it"):  # download re-checks a present file
        w.download(entry)
    rows = w.list_weights([entry, w.REGISTRY["panst3r-v1-512"]])
    assert rows[0] == ("test-weights", "fake.pth", True, len(DATA), w.weights_path(entry))
    assert rows[1].present is False and rows[1].size is None


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_weights_commands(parser.add_subparsers(dest="weights_command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_path_verify(home, capsys):
    code, out, _ = _cli(["list"], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["ID", "FILE", "PRESENT", "SIZE", "PATH"]
    assert all(name in out for name in w.REGISTRY)
    code, out, err = _cli(["path", "v2"], capsys)
    assert (code, out.strip()) == (1, str(w.weights_path("v2"))) and "not downloaded" in err
    assert _cli(["verify"], capsys)[0] == 0
    w.weights_path("v2").parent.mkdir(parents=True)
    w.weights_path("v2").write_bytes(b"not the real file")
    code, out, _ = _cli(["verify", "v2"], capsys)
    assert code == 1 and out.startswith("FAILED") and "6a7a47a2ea635de05af45ded8dcabd57" in out
    assert _cli(["path", "nope"], capsys)[0] == 2


def test_cli_download(server, home, capsys):
    code, _, err = _cli(["download", "v2"], capsys)
    assert code == 2 and "--accept-license" in err and server.requests == []
    code, out, err = _cli(["download", "siglip-text", "--base-url", server.url], capsys)
    assert code == 0 and out.strip() == str(w.weights_path("siglip-text")) and "100.0%" in err
    assert re.search(r"siglip-text\s+siglip-base-patch16-224/\s+yes", _cli(["list"], capsys)[1])


def test_progress_bar_is_throttled_and_in_place():
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, interval=0.25, clock=lambda: now[0])
    for i in range(1, 101):
        now[0] = i * 0.01
        bar(i * 10_000, 1_000_000)
    bar.finish()
    text = stream.getvalue()
    assert bar.draws == 0 and text.count("\r") <= 6 and text.endswith("\n")
    assert "100.0%" in text and "1.0 MB / 1.0 MB" in text and "MB/s" in text


def test_failed_folder_download_leaves_no_folder_and_resumes(server, home):
    entry = w.REGISTRY["siglip-text"]
    target = w.weights_path(entry)
    spiece = server.files.pop("/siglip-base-patch16-224/spiece.model")
    with pytest.raises(w.WeightsError, match="spiece.model answered HTTP 404") as exc:
        w.download(entry, base_url=server.url)
    assert str(exc.value).endswith(f"or download {', '.join(entry.files)} from {entry.url}/ into the folder {target}")
    assert not target.exists() and not w.is_present(entry)  # no folder that looks like a model
    staged = sorted(p.name for p in target.with_name(".siglip-base-patch16-224.partial").iterdir())
    assert staged == ["config.json", "model.safetensors"]  # the files fetched before the failure, kept hidden
    server.files["/siglip-base-patch16-224/spiece.model"] = spiece
    server.requests.clear()
    assert w.download(entry, base_url=server.url) == target
    assert [p for p, _ in server.requests] == [f"/siglip-base-patch16-224/{n}" for n in entry.files[2:]]
    assert sorted(p.name for p in target.iterdir()) == sorted(entry.files)
    assert not target.with_name(".siglip-base-patch16-224.partial").exists() and w.verify(entry)[0]


def test_incomplete_folder_counts_as_absent_and_names_the_missing_files(server, home):
    from panst3r_engine.vocab.embeddings import default_text_model_dir, embeddings_for
    from panst3r_engine.vocab.vocabularies import VocabularyError, load_vocabulary

    entry = w.REGISTRY["siglip-text"]
    target = w.weights_path(entry)
    target.mkdir(parents=True)  # what an interrupted download by an older engine left behind
    for name in ("config.json", "tokenizer_config.json"):
        (target / name).write_bytes(b"{}")
    (target / "special_tokens_map.json").write_bytes(b"")  # empty: as good as missing
    (target / "model.safetensors.part").write_bytes(SIGLIP["/siglip-base-patch16-224/model.safetensors"][:100])
    assert not w.is_present(entry) and default_text_model_dir() is None
    sentence = (
        f"the folder {target} is incomplete: download model.safetensors, spiece.model, "
        f"special_tokens_map.json from {entry.url}/ into it"
    )
    assert sentence in w.manual_instructions(entry)
    with pytest.raises(VocabularyError) as exc:
        embeddings_for(load_vocabulary("coco"))
    assert sentence in str(exc.value) and "--vocab-embeddings" in str(exc.value)
    assert "sentencepiece" not in str(exc.value)
    w.download(entry, base_url=server.url)  # completes the folder, resuming the old .part
    assert ("/siglip-base-patch16-224/model.safetensors", "bytes=100-") in server.requests
    assert sorted(p.name for p in target.iterdir()) == sorted(entry.files) and w.verify(entry)[0]


def test_readme_troubleshooting_quotes_the_messages_users_see(home):
    """Each quoted message in the README's Troubleshooting list matches the real one, fragment by fragment."""
    from panst3r_engine.vocab.embeddings import embeddings_for
    from panst3r_engine.vocab.vocabularies import VocabularyError, load_vocabulary

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r'^- \*\*"(.*?)"\*\*', section, re.M)

    def message_of(call) -> str:
        with pytest.raises(w.WeightsError if call is _weights else VocabularyError) as exc:
            call()
        return str(exc.value)

    def _weights():
        w.resolve_weights("v2")

    def _embeddings():
        embeddings_for(load_vocabulary("scannetpp"))

    target = w.weights_path("siglip-text")
    seen = [message_of(_weights), message_of(_embeddings)]
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    seen.append(message_of(_embeddings))
    assert len(quoted) >= 3
    for quote, message in zip(quoted[:3], seen):  # the three weights and text-model entries come first
        position = 0
        for fragment in [f.strip() for f in quote.replace("N-class", "…").split("…") if f.strip()]:
            position = message.find(fragment, position)
            assert position >= 0, (fragment, message)


def test_announced_size_above_the_cap_is_refused_before_writing(entry, server):
    small = replace(entry, size_hint=500_000)  # at most 2 x 500 kB may come; the server announces 2 MB
    with pytest.raises(w.WeightsError, match=r"announces 2000000 bytes, more than the 1000000 bytes") as exc:
        w.download(small, chunk_size=CHUNK)
    assert "nothing was downloaded" in str(exc.value)
    assert list(w.weights_dir().iterdir()) == []  # no .part either


def test_endless_body_is_stopped_at_the_cap_and_deleted(entry, server):
    server.endless_blocks = 1024  # 64 MB without Content-Length; the cap is 2 x 2 MB
    start = time.monotonic()
    with pytest.raises(w.WeightsError, match=r"sent more than the 4000000 bytes .* stopped and deleted"):
        w.download(entry, chunk_size=CHUNK)
    assert time.monotonic() - start < 10
    assert list(w.weights_dir().iterdir()) == []


def test_drip_stops_at_the_deadline_and_keeps_the_part(entry, server):
    server.drip = True  # 20 bytes/s for a 2 MB file: it would take 28 hours
    start = time.monotonic()
    with pytest.raises(w.WeightsError, match=r"did not finish within 0\.5 s .*resume from the fake\.pth\.part"):
        w.download(entry, chunk_size=CHUNK, timeout=5, deadline_s=0.5)
    assert time.monotonic() - start < 3  # bounded by the deadline, not by the 5 s read timeout
    server.release.set()
    part = w.weights_path(entry).with_name("fake.pth.part")
    assert 0 < part.stat().st_size < 200 and part.read_bytes() == DATA[: part.stat().st_size]


def test_default_deadline_allows_a_slow_connection():
    assert httpfetch.default_deadline(None) is None
    assert httpfetch.default_deadline(3_500_000_000) == 300 + 35_000  # 3.5 GB at 100 kB/s, plus 5 minutes


def test_redirect_on_the_same_host_is_followed(entry, server):
    server.redirects["/old/fake.pth"] = "/fake.pth"
    moved = replace(entry, url=f"{server.url}/old/fake.pth")
    assert w.download(moved).read_bytes() == DATA
    assert [p for p, _ in server.requests] == ["/old/fake.pth", "/fake.pth"]


def test_redirect_to_another_host_is_refused_unless_listed(entry, server):
    port = server.url.rsplit(":", 1)[1]
    server.redirects["/fake.pth"] = f"http://localhost:{port}/cdn/fake.pth"
    server.files["/cdn/fake.pth"] = DATA
    with pytest.raises(w.WeightsError, match=r"redirects to the host localhost, which is not a known source"):
        w.download(entry)
    assert [p for p, _ in server.requests] == ["/fake.pth"]  # the other host was never contacted
    assert not w.weights_path(entry).exists()
    assert w.download(replace(entry, hosts=("localhost",))).read_bytes() == DATA
    assert [p for p, _ in server.requests] == ["/fake.pth", "/fake.pth", "/cdn/fake.pth"]


def test_redirect_host_rules():
    t = httpfetch._Transfer("https://huggingface.co/x", Path("x.part"), hosts=(".hf.co", "huggingface.co"))
    httpfetch._check_redirect(t, t.url, "https://cas-bridge.xethub.hf.co/y")  # a listed domain's subdomain
    httpfetch._check_redirect(t, t.url, "https://huggingface.co/z")
    for target, words in (
        ("https://evil-hf.co/y", "host evil-hf.co"),  # a suffix match needs the dot
        ("https://hf.co.evil.example/y", "host hf.co.evil.example"),
        ("http://huggingface.co/y", "insecure address"),  # no downgrade to plain HTTP
        ("file:///etc/passwd", "insecure address"),
    ):
        with pytest.raises(httpfetch.DownloadError, match=re.escape(words)):
            httpfetch._check_redirect(t, t.url, target)


def test_compressed_answer_is_refused(entry, server):
    server.files["/fake.pth"] = gzip.compress(DATA)
    server.extra_headers["/fake.pth"] = {"Content-Encoding": "gzip"}
    with pytest.raises(w.WeightsError, match=r"answered with Content-Encoding gzip .* so nothing was saved"):
        w.download(entry)
    assert list(w.weights_dir().iterdir()) == []


def test_tampered_folder_file_of_the_right_size_is_deleted_before_the_folder_is_placed(server, home):
    entry = w.REGISTRY["siglip-text"]
    target = w.weights_path(entry)
    path = "/siglip-base-patch16-224/tokenizer_config.json"
    server.files[path] = b"[]"  # same size as the pinned b"{}", other bytes
    with pytest.raises(w.WeightsError, match=r"tokenizer_config\.json from .* has SHA-256 [0-9a-f]{64} but") as exc:
        w.download(entry, base_url=server.url)
    assert "so it was deleted" in str(exc.value)
    assert not target.exists() and not w.is_present(entry)
    staged = sorted(p.name for p in staging_dir(target).iterdir())
    assert "tokenizer_config.json" not in staged and "model.safetensors" in staged
    server.files[path] = b"{}"
    assert w.download(entry, base_url=server.url) == target and w.verify(entry)[0]


def test_verify_checks_pinned_hashes(server, home):
    path = w.download("siglip-text", base_url=server.url)
    ok, message = w.verify("siglip-text")
    assert ok and "4 with SHA-256 ok" in message
    (path / "config.json").write_bytes(b"[]")  # same size: only the hash tells
    ok, message = w.verify("siglip-text")
    assert not ok and "config.json has SHA-256" in message and "delete it" in message


def test_every_download_is_bounded():
    """A server's answer is untrusted: no registry file may be fetched without a byte limit."""
    from panst3r_engine.model.codebook import MAX_CODEBOOK_BYTES

    for entry in w.REGISTRY.values():
        for name in entry.files or (None,):
            assert entry.max_bytes(name), f"{entry.id} {name or ''} has no download limit"
    assert w.REGISTRY["must3r-retrieval-512-codebook"].max_bytes() == MAX_CODEBOOK_BYTES


def test_real_text_tower_pins_and_hosts():
    entry = w.REGISTRY["siglip-text"]
    assert [name for name, _ in entry.pins] == list(entry.files)
    for _, pin in entry.pins:
        assert pin.size and re.fullmatch(r"[0-9a-f]{64}", pin.sha256)
    assert entry.max_bytes("model.safetensors") == 812_672_320
    assert ".hf.co" in entry.hosts and "/resolve/main" not in entry.url
    assert w.REGISTRY["panst3r-v2-512"].max_bytes() == 2 * 3_200_000_000 and not w.REGISTRY["panst3r-v2-512"].hosts
