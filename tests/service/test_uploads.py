"""Uploads: safe names inside the job folder, a PIL check before queuing, size and disk limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.uploads import check_disk_space, safe_name, save_uploads, unique_names
from tests.service.conftest import photo_bytes


class FakeUpload:
    def __init__(self, filename: str | None, data: bytes) -> None:
        self.filename, self.stream = filename, io.BytesIO(data)


@pytest.mark.parametrize(
    "name, safe",
    [
        ("IMG_0001.JPG", "IMG_0001.jpg"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.png", "evil.png"),
        ("/abs/path/a photo (1).jpeg", "a_photo__1.jpeg"),
        ("Café.jpg", "Cafe.jpg"),
        ("写真.jpg", "image_0003.jpg"),
        ("..", "image_0003"),
        ("", "image_0003"),
        (None, "image_0003"),
        (".hidden.png", "hidden.png"),
    ],
)
def test_safe_name_drops_every_directory(name, safe):
    assert safe_name(name, 3) == safe


def test_names_are_unique_ignoring_case_and_extension():
    assert unique_names(["a.jpg", "A.png", "a.jpg", "x/a.JPG", "b"]) == ["a.jpg", "A_1.png", "a_2.jpg", "a_3.jpg", "b"]


def test_photos_are_saved_in_order_inside_the_folder(tmp_path):
    uploads = [
        FakeUpload("../../b.png", photo_bytes(fmt="PNG")),
        FakeUpload("noext", photo_bytes(seed=1)),
        FakeUpload("/tmp/a.jpg", photo_bytes(seed=2)),
    ]
    paths = save_uploads(uploads, tmp_path / "input")
    assert [p.name for p in paths] == ["b.png", "noext.jpg", "a.jpg"]
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["a.jpg", "b.png", "noext.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]


def test_files_that_are_not_images_are_named(tmp_path):
    uploads = [
        FakeUpload("good.jpg", photo_bytes()),
        FakeUpload("notes.jpg", b"shopping list"),
        FakeUpload("empty.png", b""),
    ]
    with pytest.raises(ApiError) as info:
        save_uploads(uploads, tmp_path)
    assert info.value.status == 422 and info.value.code == "bad_image"
    message = info.value.message
    assert "2 of 3 files" in message and "notes.jpg: not a readable image" in message
    assert "empty.png: the file is empty" in message and "good.jpg" not in message


def test_disk_space_is_checked(tmp_path):
    check_disk_space(tmp_path, 1000, min_free=1)
    with pytest.raises(ApiError) as info:
        check_disk_space(tmp_path, 1000, min_free=1 << 60)
    assert info.value.status == 507 and "--jobs-dir" in info.value.message


# ---------------------------------------------------------------- over HTTP: refused before any job exists
def assert_refused(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return error["message"]


def test_no_photos(engine, jobs_dir):
    message = assert_refused(engine.post("/v1/jobs", data={"options": "{}"}), 400, "no_images")
    assert "'images'" in message
    message = assert_refused(engine.post("/v1/jobs", files={"photos": ("a.jpg", photo_bytes())}), 400, "no_images")
    assert "'photos'" in message


def test_text_file_named_jpg_is_422_naming_it(engine, jobs_dir):
    response = engine.submit([("good.jpg", photo_bytes()), ("holiday.jpg", b"this is a text file\n" * 10)])
    assert "holiday.jpg" in assert_refused(response, 422, "bad_image")
    assert list(jobs_dir.iterdir()) == []
    assert engine.get("/v1/jobs").json() == {"jobs": []}


def test_unknown_option_is_400_naming_it(engine):
    response = engine.submit([("a.jpg", photo_bytes())], {"keyframes": 2, "colour": "red"})
    assert "'colour'" in assert_refused(response, 400, "bad_options")
    response = engine.post("/v1/jobs", files={"images": ("a.jpg", photo_bytes())}, data={"options": "{oops"})
    assert "not valid JSON" in assert_refused(response, 400, "bad_options")


def test_too_large_is_413(start_engine):
    engine = start_engine(MAX_UPLOAD_MB=0.1)
    response = engine.submit([("big.png", b"\0" * 200_000)])
    assert "0.1 MB" in assert_refused(response, 413, "too_large")


def test_too_many_photos(start_engine):
    engine = start_engine(MAX_IMAGES=2)
    response = engine.submit([(f"{i}.jpg", photo_bytes(64, 64, i)) for i in range(3)])
    assert "limit of 2" in assert_refused(response, 400, "too_many_images")


def test_full_disk_is_507(start_engine, jobs_dir):
    engine = start_engine(MIN_FREE_BYTES=1 << 60)
    assert "GB" in assert_refused(engine.submit([("a.jpg", photo_bytes())]), 507, "insufficient_storage")
    assert list(jobs_dir.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs) for the jobs folder; skipped where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_concurrent_uploads_that_fill_the_disk_get_507_not_500(start_engine, small_disk):
    """Four clients send 1.2 MB each to a 4 MiB disk at once: the ones that do not fit get 507 (never 500) and
    leave no job folder behind."""
    import threading

    from tests.service.conftest import FAST

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (640, 640, 3), dtype=np.uint8)).save(buf, format="PNG")  # ~1.2 MB
    photo = buf.getvalue()
    engine = start_engine(JOBS_DIR=small_disk / "jobs", MIN_FREE_BYTES=0)
    barrier, statuses = threading.Barrier(4), []

    def send(i: int) -> None:
        barrier.wait()
        statuses.append(engine.submit([(f"p{i}.png", photo)], FAST).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) and set(statuses) <= {202, 507} and 507 in statuses, statuses
    accepted = statuses.count(202)
    jobs = [p for p in (small_disk / "jobs").iterdir() if p.is_dir()]
    assert len(jobs) == accepted  # a refused upload leaves nothing
