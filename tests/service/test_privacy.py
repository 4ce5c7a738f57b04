"""Job data is private to the engine's user, token files must be, crashes leave no orphans, and remote
clients never learn the engine's folders."""

from __future__ import annotations

import io
import os
import stat
import sys

import pytest
from PIL import Image

from panst3r_engine.service.auth import TokenError, read_token_file
from panst3r_engine.service.records import new_job_id
from tests.service.conftest import FAST, TOKEN, make_record, photo_bytes

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
def test_job_folders_and_files_are_private(engine, jobs_dir):
    old = os.umask(0o022)  # the common default: without explicit modes, everything would be world-readable
    try:
        job = engine.submit(
            [("a.jpg", photo_bytes()), ("b.jpg", photo_bytes(seed=1))], {**FAST, "vocab": ["chair"]}
        ).json()
    finally:
        os.umask(old)
    folder = jobs_dir / job["id"]
    assert _mode(jobs_dir) & 0o077 == 0 and _mode(folder) == 0o700 and _mode(folder / "input") == 0o700
    for path in [folder / "job.json", folder / "vocab.txt", *(folder / "input").iterdir()]:
        assert _mode(path) == 0o600, path
    engine.wait(job["id"])
    assert _mode(folder / "job.json") == 0o600 and _mode(folder) == 0o700


@posix_only
@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602, 0o660])
def test_token_files_others_may_change_are_refused(tmp_path, mode):
    path = tmp_path / "token.txt"
    path.write_text(TOKEN)
    path.chmod(mode)
    with pytest.raises(TokenError, match=f"can be changed by other users .*run chmod 600 {path}"):
        read_token_file(path)
    path.chmod(0o600)
    assert read_token_file(path) == TOKEN


def test_a_crash_while_saving_uploads_leaves_no_orphan(start_engine, jobs_dir):
    jobs_dir.mkdir(parents=True)
    crashed = jobs_dir / new_job_id()  # what a kill during save_uploads leaves: marker, half the photos
    (crashed / "input").mkdir(parents=True)
    (crashed / ".panst3r-job").write_text("made by the PanSt3R engine service\n")
    (crashed / "input" / "a.jpg").write_bytes(photo_bytes())
    foreign = jobs_dir / new_job_id()  # id-named but not made by the service: not ours to delete
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    other = jobs_dir / "my-photos"
    other.mkdir()
    kept = make_record(jobs_dir, "done", files=("manifest.json",))
    start_engine()
    assert not crashed.exists()
    assert (foreign / "notes.txt").read_text() == "keep" and other.is_dir()
    assert (kept.folder / "bundle" / "manifest.json").is_file()


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_errors_sent_to_clients_name_no_server_folders(engine, jobs_dir):
    job = engine.submit([("small.jpg", _tiny_jpeg()), ("b.jpg", photo_bytes())], FAST).json()
    final = engine.wait(job["id"])
    assert final["state"] == "failed" and "small.jpg" in final["error"]["message"], final
    shown = str(engine.get(f"/v1/jobs/{job['id']}").json()) + str(engine.get("/v1/jobs").json())
    assert str(jobs_dir) not in shown and str(jobs_dir.resolve()) not in shown and "/input/" not in shown
    assert os.path.expanduser("~") not in shown
