"""A phone video uploaded to the service: checked with PyAV before the job is queued, then run as its frames."""

from __future__ import annotations

import pytest

from panst3r_engine.pipeline.video import VideoLimits, set_video_limits, video_limits
from tests.service.conftest import FAST, photo_bytes
from tests.service.test_jobs import check_bundle_zip
from tests.video_utils import corrupt_payload, pan_frames, write_video

pytest.importorskip("av", reason="PyAV (the 'video' extra) is not installed")


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    """3 s of a 128x96 pan at 10 fps, H.264 in MP4."""
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4", pan_frames(30)).read_bytes()


@pytest.fixture
def restore_video_limits():
    """An engine sets the process's video limits; put back what the other tests expect."""
    before = video_limits()
    yield
    set_video_limits(before)


def refusal(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error["message"]


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"junk" * 200, "clip.mp4: not a readable video"),
        ("list.mov", b"ffconcat version 1.0\nfile '/etc/passwd'\n", "list.mov: not a readable video"),
    ],
)
def test_garbage_named_like_a_video_is_refused(engine, jobs_dir, restore_video_limits, name, data, words):
    message = refusal(engine.submit([(name, data)]), 422, "bad_video")
    assert message.startswith(words) and message.endswith("convert it to H.264 MP4 and try again")
    assert "/" not in message.split("(")[0] and str(jobs_dir) not in message
    assert not any(jobs_dir.iterdir())  # nothing half-written is left


def test_an_unsupported_codec_is_named(engine, tmp_path, restore_video_limits):
    lossless = write_video(tmp_path / "scan.mkv", pan_frames(3), codec="ffv1")
    message = refusal(engine.submit([("scan.mkv", lossless.read_bytes())]), 422, "bad_video")
    assert message.startswith("scan.mkv: the video codec 'ffv1' is not supported")


@pytest.mark.parametrize(
    "config, words",
    [
        ({"MAX_VIDEO_SECONDS": 2}, "walk.mp4: 3 s of video is longer than this engine's limit of 2 s; trim it first"),
        ({"MAX_VIDEO_MEGAPIXELS": 0.01}, "frames of 128x96 are more than this engine's limit of 0.01 megapixels"),
        ({"MAX_VIDEO_MB": 0.001}, "kB is more than this engine's limit of 1 kB per video; trim it"),
        ({"MAX_VIDEO_MEMORY_GB": 0.001}, "of memory, more than this engine's 1.0 MB; ask for fewer frames"),
    ],
)
def test_a_video_over_the_limits_is_refused_before_decoding(
    start_engine, clip_bytes, tmp_path, restore_video_limits, config, words
):
    """The coded frames are zeroed, so decoding would fail: the limit's sentence shows the header was enough."""
    broken = corrupt_payload(write_bytes(tmp_path / "walk.mp4", clip_bytes)).read_bytes()
    engine = start_engine(**config)
    assert words in refusal(engine.submit([("walk.mp4", broken)], {"video_frames": 100}), 422, "bad_video")


def test_a_video_whose_frames_do_not_decode_is_refused(engine, clip_bytes, tmp_path, restore_video_limits):
    broken = corrupt_payload(write_bytes(tmp_path / "walk.mp4", clip_bytes)).read_bytes()
    assert "walk.mp4: the video cannot be decoded" in refusal(engine.submit([("walk.mp4", broken)]), 422, "bad_video")


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def test_frames_from_videos_count_towards_the_image_limit(start_engine, clip_bytes, restore_video_limits):
    engine = start_engine(MAX_IMAGES=5)
    message = refusal(engine.submit([("walk.mp4", clip_bytes)], {"video_frames": 8}), 400, "too_many_images")
    assert "about 8 images, more than this engine's limit of 5" in message


@pytest.mark.slow
def test_a_video_and_a_photo_run_as_one_job(engine, clip_bytes, restore_video_limits):
    response = engine.submit(
        [("../phone/walk.mp4", clip_bytes), ("still.jpg", photo_bytes(128, 96, seed=3))], {**FAST, "video_frames": 3}
    )
    assert response.status_code == 202, response.text
    job = engine.wait(response.json()["id"], timeout=300)
    assert job["state"] == "done", job
    images = check_bundle_zip(engine, job["id"])["images"]
    frames = [im for im in images if "video" in im]
    assert 2 <= len(frames) <= 3 and [im["file"] for im in images if "video" not in im] == ["still.jpg"]
    assert all(im["video"]["video"] == "walk.mp4" and im["file"].startswith("walk_") for im in frames)
    times = [im["video"]["time"] for im in frames]
    assert times == sorted(times) and len(set(times)) == len(times) and 0.0 <= times[0] and times[-1] < 3.0


def test_the_serve_flags_and_the_upload_limit_bound_the_video_limits():
    import argparse

    from panst3r_engine.service.app import DEFAULTS
    from panst3r_engine.service.server import add_serve_command
    from panst3r_engine.service.videos import service_limits

    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers())
    args = parser.parse_args(["serve", "--max-video-seconds", "30", "--max-video-megapixels", "2"])
    assert (args.max_video_seconds, args.max_video_megapixels) == (30.0, 2.0)
    limits = service_limits({**DEFAULTS, "MAX_VIDEO_SECONDS": 30, "MAX_VIDEO_MEGAPIXELS": 2, "MAX_UPLOAD_MB": 100})
    assert limits == VideoLimits(
        max_bytes=100 << 20,
        max_pixels=2_000_000,
        max_seconds=30.0,
        max_decoded=30 * 240 + 1,
        decode_seconds=600.0,
        max_memory=8 << 30,
    )
