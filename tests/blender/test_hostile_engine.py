"""A hostile engine on 127.0.0.1 cannot make the add-on touch anything outside its own results folder.

The engine is untrusted: a remote one may be anyone's. These tests run the real
client (``EngineClient``, ``RunJob``) against tests/blender/fake_engine.py told
to answer job ids that are paths, bogus states, oversized replies and evil zips,
and check a "victim" folder next to the results folder stays as it was.
"""

from __future__ import annotations

import io
import json
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest

from blender_addon.client import engine as engine_module
from blender_addon.client.engine import EngineClient, EngineError, _safe_extract
from blender_addon.client.jobs import JobManager, RunJob
from tests.blender.fake_engine import make_server

DONE = {"id": "x", "state": "done", "stage": "write_bundle", "fraction": 1.0, "message": "", "error": None}


@pytest.fixture
def hostile(synthetic_bundle: Path, tmp_path: Path):
    """(fake engine state, client, results folder, victim folder with a file, snapshot function)."""
    server, engine = make_server("secret", synthetic_bundle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = EngineClient(f"http://127.0.0.1:{server.server_address[1]}", "secret", timeout=5)
    results = tmp_path / "addon" / "results"
    results.mkdir(parents=True)
    victim = tmp_path / "victim"
    (victim / "projects").mkdir(parents=True)
    (victim / "projects" / "thesis.txt").write_text("years of work")

    def snapshot(folder: Path) -> dict:
        return {
            p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))
        }

    yield engine, client, results, victim, snapshot
    server.shutdown()
    server.server_close()


def _run(client: EngineClient, results: Path, tmp_path: Path, timeout: float = 20.0) -> dict:
    """A RunJob driven like the UI timer, with a bounded wait."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8")
    manager = JobManager()
    manager.start(RunJob(lambda: client, [photo], {}, results, poll_interval=0.01))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = manager.poll()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    manager.cancel()
    raise AssertionError(f"the job did not end within {timeout} s: {manager.poll()}")


def _hostile_ids(victim: Path) -> list:
    return [
        str(victim / "projects"),
        str(victim),
        "../../victim",
        "../victim/projects",
        "..",
        ".",
        "",
        "20260101-000000-abcdef/../../../victim",
        "20260101-000000-abcdef\\..\\..",
        "x" * 100_000,
        "20260101-000000-ABCDEF",
        12345,
        None,
        ["a"],
        {"id": "b"},
    ]


@pytest.mark.parametrize("which", range(15))
def test_job_ids_that_are_paths_are_refused(hostile, tmp_path: Path, which: int) -> None:
    engine, client, results, victim, snapshot = hostile
    before = snapshot(victim)
    engine.next_id = _hostile_ids(victim)[which]
    engine.status_reply = DONE  # every path is a finished job whose bundle downloads
    if engine.next_id is None:  # the JSON null: no usable id at all
        engine.next_id = "null-is-not-an-id"
    final = _run(client, results, tmp_path)
    assert final["state"] == "failed", final
    assert "not a PanSt3R job id" in final["error"] and "check that the engine URL" in final["error"]
    assert len(final["error"]) < 300
    assert snapshot(victim) == before
    assert list(results.iterdir()) == []  # nothing made, nothing left behind
    assert engine.requests == ["/v1/jobs"]  # the id never went into a URL either


def test_an_existing_result_folder_is_never_replaced(hostile, tmp_path: Path) -> None:
    engine, client, results, _, _ = hostile
    engine.next_id, engine.status_reply = "20260101-000000-abcdef", DONE
    mine = results / "20260101-000000-abcdef"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's notes")
    final = _run(client, results, tmp_path)
    assert final["state"] == "done", final
    assert (mine / "notes.txt").read_text() == "the user's notes" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt"
    ]
    bundle = Path(final["bundle"])
    assert bundle.is_relative_to(results / "20260101-000000-abcdef-1") and (bundle / "manifest.json").is_file()
    assert sorted(p.name for p in results.iterdir()) == ["20260101-000000-abcdef", "20260101-000000-abcdef-1"]


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("bundle/manifest.json", json.dumps({"format": "panst3r-bundle"}))
        for info, data in members:
            zf.writestr(info, data)
    return buffer.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    """A zip member that unpacks as a symbolic link (Unix mode bits in the external attributes)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "member",
    [
        "../escape.txt",
        "bundle/../../escape.txt",
        "/tmp/panst3r-escape.txt",
        "bundle/..\\..\\escape.txt",
        "C:/escape.txt",
        "link",
    ],
)
def test_evil_archives_are_refused_and_leave_nothing(hostile, tmp_path: Path, member: str) -> None:
    engine, client, results, victim, snapshot = hostile
    before = snapshot(victim)
    info = _symlink("bundle/link") if member == "link" else zipfile.ZipInfo(member)
    data = _zip([(info, str(victim).encode() if member == "link" else b"pwned")])
    engine.status_reply, engine.bundle_zip = DONE, lambda: data
    final = _run(client, results, tmp_path)
    assert final["state"] == "failed" and "unsafe path" in final["error"], final
    assert snapshot(victim) == before and not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/panst3r-escape.txt").exists()
    assert list(results.iterdir()) == []  # no archive, no half-extracted folder


def test_archive_size_is_decided_before_extracting(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    archive.write_bytes(_zip([("bundle/points.npz", b"\0" * 5000)]))  # deflates to almost nothing
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EngineError, match="would unpack to .* free disk space"):
        _safe_extract(archive, out, max_bytes=4096)
    assert list(out.iterdir()) == []


def test_a_download_larger_than_the_disk_allows_stops(hostile, tmp_path: Path, monkeypatch) -> None:
    engine, client, results, _, _ = hostile
    monkeypatch.setattr(engine_module, "MAX_BUNDLE_BYTES", 1000)
    engine.status_reply = DONE
    final = _run(client, results, tmp_path)
    assert final["state"] == "failed" and "that can be stored here; free disk space" in final["error"], final
    assert list(results.iterdir()) == []


def test_an_unknown_state_ends_the_job(hostile, tmp_path: Path) -> None:
    engine, client, results, _, _ = hostile
    engine.status_reply = {"state": "exploding", "stage": "x", "fraction": 0.1}
    final = _run(client, results, tmp_path, timeout=10)
    assert final["state"] == "failed" and "unknown job state 'exploding'; update the engine" in final["error"]


def test_bogus_status_fields_are_checked_and_shortened(hostile, tmp_path: Path) -> None:
    engine, client, _, _, _ = hostile
    engine.status_reply = {
        "state": "running",
        "stage": ["not", "text"],
        "fraction": "NaN",
        "message": "m" * 100_000,
        "error": {"code": 1, "message": "e" * 100_000},
    }
    status = client.status("20260101-000000-abcdef")
    assert status["fraction"] == 0.0 and isinstance(status["stage"], str) and len(status["message"]) <= 200
    assert len(status["error"]["message"]) <= 500
    engine.status_reply = {"state": "running", "fraction": float("inf")}  # json.dumps writes Infinity
    assert client.status("20260101-000000-abcdef")["fraction"] == 0.0


def test_an_oversized_reply_is_refused(hostile) -> None:
    engine, client, _, _, _ = hostile
    engine.status_reply = {"state": "running", "padding": "x" * (3 << 20)}
    with pytest.raises(EngineError, match="larger than the 1048576 bytes expected"):
        client.status("20260101-000000-abcdef")


def test_job_ids_from_a_blend_file_are_checked_before_any_request(hostile) -> None:
    engine, client, _, _, _ = hostile
    for call in (
        lambda: client.render_view("../../v1/shutdown", [[1, 0, 0]] * 3, [[1, 0, 0, 0]] * 4, 8, 8),
        lambda: client.cancel("../shutdown"),
        lambda: client.status("/etc/passwd"),
        lambda: client.download_bundle("..", Path("unused")),
    ):
        with pytest.raises(EngineError, match="not a PanSt3R job id"):
            call()
    assert engine.requests == []


# ---------------------------------------------------------------- in Blender: render replies and uploads
def _png(width: int, height: int, raw: bytes) -> bytes:
    """PNG bytes with an 8-bit RGB header of width x height and ``raw`` (any length) as its image data."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def test_render_images_are_checked_before_decoding(addon) -> None:
    render_view = addon.module("operators.render_view")
    good = _png(4, 2, b"\0" * (2 * (1 + 4 * 3)))
    assert render_view.decode_png(good, 4, 2).shape == (2, 4, 3)
    bomb = _png(4, 2, b"\0" * (64 << 20))  # 64 MB of zeros in ~64 kB
    assert len(bomb) < 200_000
    with pytest.raises(render_view.RenderViewError, match="more data than a 4x2 view"):
        render_view.decode_png(bomb, 4, 2)
    with pytest.raises(render_view.RenderViewError, match="a 100000x100000 image .* for a 4x2 view"):
        render_view.decode_png(_png(100_000, 100_000, b""), 4, 2)


def test_only_the_addons_own_upload_folders_are_removed(addon, tmp_path: Path) -> None:
    run = addon.module("operators.run")
    uploads, outside = tmp_path / "uploads", tmp_path / "outside"
    (uploads / "0123abcd").mkdir(parents=True)
    (uploads / "0123abcd" / "image.png").write_bytes(b"old copy")
    (uploads / "holiday").mkdir()
    (uploads / "holiday" / "photo.jpg").write_bytes(b"someone's photo")
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (uploads / "abcdef01").symlink_to(outside, target_is_directory=True)
    run.remove_old_uploads(uploads)
    assert sorted(p.name for p in uploads.iterdir()) == ["abcdef01", "holiday"]
    assert (outside / "keep.txt").read_text() == "keep" and (uploads / "holiday" / "photo.jpg").is_file()
