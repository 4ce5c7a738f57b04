"""A phone-style video as input: frames sampled evenly, blurred and repeated frames dropped, times recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from panst3r_engine.errors import Cancelled
from panst3r_engine.pipeline.images import ImageError
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.pipeline.run import run_job
from panst3r_engine.pipeline.video import VideoInfo, VideoLimits, check_video, read_frames, sharpness
from tests.pipeline.conftest import textured
from tests.video_utils import corrupt_payload
from tests.video_utils import write_video as encode

av = pytest.importorskip("av", reason="PyAV (the 'video' extra) is not installed")
REPO = Path(__file__).resolve().parents[2]
BLURRED = {5, 6, 7, 20, 21, 22}  # frames smeared as by a fast pan
PAUSE = range(30, 45)  # the phone stops: the same frame 15 times


def frame_at(i: int) -> np.ndarray:
    """A walk along a wide textured strip: each frame is a 128x96 window, 4 px further right."""
    strip = textured(512, 96, 7)
    x = 4 * min(i, PAUSE.start)
    if i >= PAUSE.stop:
        x = 4 * (PAUSE.start + i - PAUSE.stop)
    img = strip[:, x : x + 128]
    if i in BLURRED:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(4)))
    return img


def write_video(path: Path, count: int = 60, fps: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"crf": "12"}
        for i in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4")


def test_blur_measure_tells_blurred_from_sharp():
    assert sharpness(frame_at(5)) < 0.3 * sharpness(frame_at(4))


def test_frames_are_spread_sharp_and_distinct(clip):
    frames = read_frames(clip, wanted=12)
    indices = [f.index for f in frames]
    assert 6 <= len(frames) <= 12 and indices == sorted(indices)
    assert not BLURRED & set(indices)  # the sharpest of each group is never a smeared frame
    assert sum(i in PAUSE for i in indices) <= 1  # the pause gives at most one frame
    assert [round(f.time, 3) for f in frames] == [round(i / 10, 3) for i in indices]
    assert frames[0].rgb.shape == (96, 128, 3) and frames[0].rgb.dtype == np.uint8


def test_frames_per_second(clip):
    frames = read_frames(clip, fps=1.0)  # 6 s of video
    assert 3 <= len(frames) <= 6


def test_a_broken_video_is_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    with pytest.raises(ImageError, match="broken.mp4: not a readable video"):
        read_frames(bad)


def test_a_video_runs_as_photos_and_the_bundle_records_the_frames(clip, tiny_checkpoint, tmp_path):
    options = JobOptions(
        weights=str(tiny_checkpoint), vocab_embeddings="random", device="cpu", resize="none", video_frames=4
    )
    result = run_job([clip], tmp_path / "out", options)
    images = result.manifest["images"]
    assert 2 <= len(images) <= 4
    assert all(im["video"]["video"] == "walk.mp4" for im in images)
    times = [im["video"]["time"] for im in images]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(im["file"].startswith("walk_f") and im["processed_size"] == [128, 96] for im in images)


class CancelDuringDecoding(Progress):
    """Cancels the job (sets its own cancel event, as the service's cancel does) when decoding reports its
    ``at``-th frame, and counts the frames decoding reports."""

    def __init__(self, at: int) -> None:
        super().__init__(cancel_event=threading.Event())
        self.at, self.decoded = at, 0

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        if message.startswith("decoding walk.mp4"):
            self.decoded += 1
            if self.decoded == self.at:
                self.cancel_event.set()
        super().update(stage, fraction, message)


def test_a_cancel_stops_decoding_at_once_and_leaves_nothing(clip, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the job's frames folder goes
    (tmp_path / "tmp").mkdir()
    progress = CancelDuringDecoding(at=5)
    options = JobOptions(weights=str(tiny_checkpoint), vocab_embeddings="random", device="cpu", resize="none")
    with pytest.raises(Cancelled):
        run_job([clip], tmp_path / "out", options, progress)
    assert progress.decoded == 5  # of the clip's 60 frames: stopped at the frame the cancel arrived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and not any((tmp_path / "tmp").iterdir())


@pytest.mark.slow
def test_run_takes_a_video_on_the_command_line(clip, tiny_checkpoint, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "panst3r_engine",
            "run",
            str(clip),
            "--weights",
            str(tiny_checkpoint),
            "--vocab-embeddings",
            "random",
            "--resize",
            "none",
            "--video-frames",
            "3",
            "--out",
            str(tmp_path / "b"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert 2 <= len(manifest["images"]) <= 3 and manifest["options"]["video_frames"] == 3


@pytest.mark.parametrize(
    "limits, words",
    [
        (VideoLimits(max_seconds=2.0), "6 s of video is longer than this engine's limit of 2 s"),
        (VideoLimits(max_pixels=10_000), "frames of 128x96 are more than this engine's limit of 0.01 megapixels"),
        (VideoLimits(max_decoded=10), "more than this engine's limit of 10 frames"),
        (VideoLimits(decode_seconds=0.0), "decoding took longer than this engine's limit of 0 s"),
        (VideoLimits(max_memory=1 << 18), "holding 14 frames of 128x96 needs 504 kB of memory, more than"),
    ],
)
def test_limits_stop_a_video_with_a_sentence(clip, limits, words):
    with pytest.raises(ImageError, match=words):
        read_frames(clip, wanted=12, limits=limits)


def test_only_the_kept_frames_are_held_while_choosing(clip):
    """36 candidates are looked at for 12 frames; memory for 12 kept frames plus 2 is enough."""
    frames = read_frames(clip, wanted=12, limits=VideoLimits(max_memory=14 * 128 * 96 * 3))
    assert [f.index for f in frames] == [f.index for f in read_frames(clip, wanted=12)] and len(frames) >= 6


def test_the_header_is_checked_before_any_frame_is_decoded(clip, tmp_path):
    broken = tmp_path / "walk.mp4"
    broken.write_bytes(clip.read_bytes())
    corrupt_payload(broken)
    with pytest.raises(ImageError, match="cannot be decoded"):
        check_video(broken)
    with pytest.raises(ImageError, match="longer than this engine's limit of 2 s"):  # not a decoding error
        check_video(broken, limits=VideoLimits(max_seconds=2.0))
    assert check_video(clip) == VideoInfo("h264", 128, 96, 6.0, 10.0)


@pytest.mark.parametrize(
    "name, data",
    [
        ("junk.mp4", b"\x00\x01garbage" * 50),
        ("list.mp4", b"ffconcat version 1.0\nfile '/etc/passwd'\n"),  # never guessed as a playlist
        ("list.mkv", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n"),
    ],
)
def test_garbage_and_playlists_are_not_videos(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=f"{name}: not a readable video"):
        check_video(tmp_path / name)


def test_other_codecs_are_refused_by_name(tmp_path):
    frames = [frame_at(i) for i in range(3)]
    assert check_video(encode(tmp_path / "phone.avi", frames, codec="mjpeg")).codec == "mjpeg"
    ffv1 = encode(tmp_path / "lossless.mkv", frames, codec="ffv1")
    with pytest.raises(ImageError, match="the video codec 'ffv1' is not supported"):
        check_video(ffv1)


def test_a_one_frame_video_passes_the_check(tmp_path):
    """The encoder's delay keeps the frame in the decoder until the end-of-file packet flushes it."""
    one = encode(tmp_path / "one.mp4", [frame_at(0)])
    assert check_video(one).codec == "h264" and len(read_frames(one)) == 1
