"""Uploaded videos: the engine's limits for them, and the check each one passes before a job is queued.

A video is opened with PyAV exactly as the job will open it (:mod:`panst3r_engine.pipeline.video`), its header
is checked against :class:`VideoLimits` (size, codec, frame size, length, memory of the frames to choose from)
and only its first frame is decoded, so a bad file is refused at upload (422) and never reaches the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from panst3r_engine.pipeline.images import ImageError
from panst3r_engine.pipeline.video import VideoLimits, check_video, planned_frames

MB = 1 << 20
GB = 1 << 30
FASTEST_CAMERA_FPS = 240  # slow-motion phone video: bounds the frames a video of the allowed length can hold


def service_limits(config: dict) -> VideoLimits:
    """The limits of an engine's configuration (``MAX_VIDEO_*``; the size also within the upload limit)."""
    seconds = float(config["MAX_VIDEO_SECONDS"])
    return VideoLimits(
        max_bytes=int(min(float(config["MAX_VIDEO_MB"]), float(config["MAX_UPLOAD_MB"])) * MB),
        max_pixels=int(float(config["MAX_VIDEO_MEGAPIXELS"]) * 1_000_000),
        max_seconds=seconds,
        max_decoded=int(seconds * FASTEST_CAMERA_FPS) + 1,
        decode_seconds=float(config["MAX_VIDEO_DECODE_S"]),
        max_memory=int(float(config["MAX_VIDEO_MEMORY_GB"]) * GB),
    )


@dataclass(frozen=True)
class VideoRequest:
    """How one job's videos become photos (the client's options) and what they may cost."""

    frames: int | None = None  # video_frames
    fps: float | None = None  # video_fps
    limits: VideoLimits = field(default_factory=VideoLimits)

    def check(self, path: Path) -> tuple[str | None, int]:
        """Why the video at ``path`` cannot be used (None when it can), and how many frames it will give."""
        try:
            info = check_video(path, self.frames, self.fps, self.limits)
        except ImageError as exc:
            text = str(exc)
            return text.removeprefix(f"{path.name}: "), 0
        return None, planned_frames(info, self.frames, self.fps)
