"""A phone video from Blender: a movie file or a movie clip in the photo list, uploaded by the add-on's client
to the real engine service (in this process, on 127.0.0.1, with a tiny random checkpoint)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.blender.test_run import _drive, _photos
from tests.video_utils import pan_frames, write_video

pytest.importorskip("av", reason="PyAV (the 'video' extra) is not installed")
TOKEN = "movie-test-token-0123456789"


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    """3 s of a 128x96 pan at 10 fps, H.264 in MP4."""
    return write_video(tmp_path_factory.mktemp("movies") / "walk.mp4", pan_frames(30))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The real engine service in a thread: (url, jobs folder)."""
    pytest.importorskip("flask", reason="the engine service needs flask")
    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.pipeline.video import set_video_limits, video_limits
    from panst3r_engine.service.server import EngineServer

    limits = video_limits()  # an engine sets its limits for the whole process; put them back afterwards
    folder = tmp_path_factory.mktemp("engine")
    weights = write_random_checkpoint(folder / "tiny_v2.pth", "v2", "tiny", seed=5)
    config = {"TOKEN": TOKEN, "JOBS_DIR": folder / "jobs", "WEIGHTS": str(weights), "DEVICE": "cpu"}
    server = EngineServer("127.0.0.1", 0, config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url, folder / "jobs"
    server.stop(timeout=30)
    thread.join(10)
    server.close()
    set_video_limits(limits)


def test_add_photos_takes_movie_files(addon, scene, movie: Path, tmp_path: Path) -> None:
    bpy, photos = addon.bpy, addon.module("operators.photos")
    still = _photos(tmp_path, 1)[0]
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / movie.name).write_bytes(movie.read_bytes())
    names = [{"name": n} for n in (movie.name, still.name, "notes.txt")]
    assert bpy.ops.panst3r.add_photos(directory=str(tmp_path), files=names) == {"FINISHED"}
    settings = scene.panst3r
    assert [Path(item.path).name for item in settings.photos] == ["walk.mp4", still.name]
    assert photos.has_movie(settings)
    resolved = photos.resolve_photos(settings, tmp_path / "uploads")
    assert resolved == [tmp_path / "walk.mp4", still] and photos.describe_files(resolved) == "1 photo and 1 movie"


def test_the_video_options_go_with_a_movie_only(addon, scene) -> None:
    run, settings = addon.module("operators.run"), scene.panst3r
    settings.video_frames, settings.video_fps = 12, 2.5
    settings.photos.add().path = "/photos/a.jpg"
    assert not {"video_frames", "video_fps"} & set(run._options(settings))
    settings.photos.add().path = "/videos/WALK.MOV"
    assert {k: run._options(settings)[k] for k in ("video_frames", "video_fps")} == {
        "video_frames": 12,
        "video_fps": 2.5,
    }


def test_the_panel_shows_the_video_options_with_a_movie(addon, scene) -> None:
    from tests.blender.test_addon import _Layout

    class Shared(_Layout):  # rows and columns record into their parent's list
        def _child(self, *args, **kwargs):
            child = Shared(self.bpy)
            child.calls = self.calls
            return child

        row = column = box = _child

    bpy, panel = addon.bpy, addon.module("ui.panel")

    def drawn(cls) -> list:
        stub = type("PanelStub", (), {"layout": Shared(bpy)})()
        cls.draw(stub, bpy.context)
        return stub.layout.calls

    assert ("operator", "panst3r.add_movie_clip") in drawn(panel.VIEW3D_PT_panst3r_photos)
    scene.panst3r.photos.add().path = "/photos/a.jpg"
    assert ("prop", "video_frames") not in drawn(panel.VIEW3D_PT_panst3r_options)
    scene.panst3r.photos.add().path = "/videos/walk.webm"
    options = drawn(panel.VIEW3D_PT_panst3r_options)
    assert ("prop", "video_frames") in options and ("prop", "video_fps") in options


def test_add_movie_clip_adds_its_file(addon, scene, movie: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    local = tmp_path / "footage" / "walk.mp4"
    local.parent.mkdir()
    local.write_bytes(movie.read_bytes())
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    clip = bpy.data.movieclips.load(str(local))
    clip.filepath = "//footage/walk.mp4"  # relative to the .blend, as Blender stores it
    assert clip.source == "MOVIE"
    assert bpy.ops.panst3r.add_movie_clip(clip=clip.name) == {"FINISHED"}
    settings = bpy.context.scene.panst3r
    assert [item.path for item in settings.photos] == [str(local)]
    assert bpy.ops.panst3r.add_movie_clip(clip=clip.name) == {"CANCELLED"}  # already listed
    assert len(settings.photos) == 1

    sequence = bpy.data.movieclips.load(str(_photos(tmp_path / "frames", 1)[0]))
    assert sequence.source == "SEQUENCE"
    with pytest.raises(RuntimeError, match="is an image sequence; add its images with Add Photos instead"):
        bpy.ops.panst3r.add_movie_clip(clip=sequence.name)
    clip.filepath = "//gone.mp4"
    with pytest.raises(RuntimeError, match="gone.mp4 of the clip 'walk.mp4' does not exist; relocate the clip"):
        bpy.ops.panst3r.add_movie_clip(clip=clip.name)
    assert len(settings.photos) == 1


def test_the_client_uploads_a_movie_clip_to_the_real_service(addon, scene, movie: Path, engine, tmp_path) -> None:
    bpy, photos, run = addon.bpy, addon.module("operators.photos"), addon.module("operators.run")
    client_module = addon.module("client.engine")
    url, jobs_dir = engine
    clip = bpy.data.movieclips.load(str(movie))
    assert bpy.ops.panst3r.add_movie_clip(clip=clip.name) == {"FINISHED"}
    settings = scene.panst3r
    settings.video_frames = 3
    files = photos.resolve_photos(settings, tmp_path / "uploads")
    client = client_module.EngineClient(url, TOKEN)
    job_id = client.submit(files, {**run._options(settings), "vocab_embeddings": "random"})
    uploaded = jobs_dir / job_id / "input" / "walk.mp4"
    try:
        assert uploaded.read_bytes() == movie.read_bytes()
    finally:
        client.cancel(job_id)

    garbage = tmp_path / "holiday.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    with pytest.raises(client_module.EngineError, match="holiday.mp4: not a readable video .*convert it to H.264"):
        client.submit([garbage], {})


@pytest.mark.slow
def test_a_movie_clip_runs_from_the_panel_on_the_real_engine(addon, scene, movie: Path, engine, monkeypatch) -> None:
    bpy, prefs = addon.bpy, addon.preferences
    saved = {name: getattr(prefs, name) for name in ("engine_mode", "remote_url", "remote_token")}
    prefs.engine_mode, prefs.remote_url, prefs.remote_token = "REMOTE", engine[0], TOKEN
    try:
        clip = bpy.data.movieclips.load(str(movie))
        assert bpy.ops.panst3r.add_movie_clip(clip=clip.name) == {"FINISHED"}
        scene.panst3r.video_frames, scene.panst3r.vocab = 3, "coco"
        assert bpy.ops.panst3r.run(extra_options='{"vocab_embeddings": "random"}') == {"FINISHED"}
        final = _drive(addon, 300)[-1]
    finally:
        for name, value in saved.items():
            setattr(prefs, name, value)
    assert final["state"] == "done", final["error"]
    from blender_addon.bundle.read import read_bundle

    data = read_bundle(final["bundle"])
    cameras = [ob for ob in bpy.data.objects if ob.type == "CAMERA"]
    assert 2 <= len(cameras) == len(data.cameras) <= 3
    assert all(ob.name.startswith("Camera.walk_f") for ob in cameras)
