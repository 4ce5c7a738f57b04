"""The main job end to end on a tiny random checkpoint: bundle content, orientation, batching."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.errors import OptionsError
from panst3r_engine.pipeline.images import ImageError
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Cancelled, Progress
from panst3r_engine.pipeline.run import run_job


def options(ckpt, **kw) -> JobOptions:
    return JobOptions(weights=str(ckpt), vocab_embeddings="random", device="cpu", **kw)


@pytest.fixture(scope="module")
def mixed_bundle(tiny_checkpoint, tmp_path_factory):
    from tests.pipeline.conftest import textured

    folder = tmp_path_factory.mktemp("mixed")
    Image.fromarray(textured(320, 240, 0)).save(folder / "a_landscape.jpg", quality=92)
    Image.fromarray(textured(240, 320, 1)).save(folder / "b_portrait.png")
    Image.fromarray(textured(300, 300, 2)).save(folder / "c_square.webp")
    paths = sorted(folder.iterdir())
    out = tmp_path_factory.mktemp("out") / "bundle"
    result = run_job(paths, out, options(tiny_checkpoint, save_raw=True, conf_threshold=1.0, keyframes=2))
    return result, read_bundle(out)


def test_bundle_describes_every_photo(mixed_bundle):
    result, bundle = mixed_bundle
    images = bundle.manifest["images"]
    assert [im["file"] for im in images] == ["a_landscape.jpg", "b_portrait.png", "c_square.webp"]
    assert [im["processed_size"] for im in images] == [[512, 384], [384, 512], [512, 384]]
    assert images[2]["crop_box"] == [0, 38, 300, 263]  # square photo centre-cropped to 4:3
    assert [im["keyframe"] for im in images] == [True, False, True]
    assert len(bundle.manifest["cameras"]) == 3
    for cam, im in zip(bundle.manifest["cameras"], images):
        K = np.array(cam["K"])
        assert K[0, 2] == im["processed_size"][0] / 2 and K[1, 2] == im["processed_size"][1] / 2
        pose = np.array(cam["cam_to_world"])
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)


def test_outputs_are_in_each_photos_orientation(mixed_bundle):
    _, bundle = mixed_bundle
    for stem, (w, h) in zip(bundle.stems, [(512, 384), (384, 512), (512, 384)]):
        assert bundle.panoptic(stem).shape == (h, w)
        assert bundle.image(stem).shape == (h, w, 3)
    raw = np.load(bundle.path / "raw.npz")
    assert raw["true_shape"].tolist() == [[384, 512], [512, 384], [384, 512]]
    assert raw["pred_masks"].shape[2:] == (256, 256)  # padded to the largest of 192x256 and 256x192


def test_points_match_their_pixels(mixed_bundle):
    _, bundle = mixed_bundle
    pts = bundle.points
    assert len(pts["xyz"]) > 0 and np.isfinite(pts["xyz"]).all()
    assert (pts["conf"] >= 1.0).all()
    for view, stem in enumerate(bundle.stems):
        mine = pts["view"] == view
        x, y = pts["pixel"][mine, 0].astype(int), pts["pixel"][mine, 1].astype(int)
        photo = bundle.image(stem)[y, x].astype(int)  # stored as JPEG: compare loosely
        assert np.abs(pts["rgb"][mine].astype(int) - photo).mean() < 3
        np.testing.assert_array_equal(pts["segment"][mine], bundle.panoptic(stem)[y, x])


def test_segments_carry_classes(mixed_bundle):
    _, bundle = mixed_bundle
    names = [c["name"] for c in bundle.manifest["classes"]]
    assert len(names) == 100 and "chair" in names
    for seg in bundle.manifest["segments"]:
        assert 0 <= seg["class_id"] < 100
        assert seg["point_count"] == int((bundle.points["segment"] == seg["id"]).sum())


def test_batch_size_gives_the_same_bundle(tiny_checkpoint, photo_dir, tmp_path, mixed_bundle):
    _, ref = mixed_bundle
    paths = sorted(photo_dir.iterdir())
    run_job(paths, tmp_path / "b3", options(tiny_checkpoint, conf_threshold=1.0, keyframes=2, max_batch=3))
    other = read_bundle(tmp_path / "b3")
    for stem_a, stem_b in zip(ref.stems, other.stems):
        assert (ref.panoptic(stem_a) == other.panoptic(stem_b)).mean() > 0.999
    np.testing.assert_allclose(other.points["xyz"][:1000], ref.points["xyz"][:1000], rtol=1e-4, atol=1e-4)


def test_one_photo_is_enough(tiny_checkpoint, photo_dir, tmp_path):
    result = run_job([photo_dir / "a_landscape.jpg"], tmp_path / "one", options(tiny_checkpoint))
    bundle = read_bundle(result.bundle)
    assert len(bundle.manifest["images"]) == 1 and len(bundle.manifest["cameras"]) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"this is not a picture", "not a readable image"),
    ],
)
def test_bad_photo_is_named_and_nothing_is_written(tiny_checkpoint, photo_dir, tmp_path, content, message):
    bad = photo_dir / "broken.jpg"
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=f"broken.jpg: {message}"):
        run_job(sorted(photo_dir.iterdir()), tmp_path / "never", options(tiny_checkpoint))
    assert not (tmp_path / "never").exists()
    assert not any(p.name.startswith(".never") for p in tmp_path.iterdir())


def test_tiny_photo_is_refused(tiny_checkpoint, photo_dir, tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(photo_dir / "thumb.png")
    with pytest.raises(ImageError, match=r"thumb.png: 30x20 pixels is too small"):
        run_job(sorted(photo_dir.iterdir()), tmp_path / "never", options(tiny_checkpoint))
    assert not (tmp_path / "never").exists()


def test_existing_output_is_not_overwritten(tiny_checkpoint, photo_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="already exists"):
        run_job(sorted(photo_dir.iterdir()), out, options(tiny_checkpoint))
    assert (out / "keep.txt").read_text() == "mine"


def test_empty_output_folder_is_used_and_overwrite_replaces(tiny_checkpoint, photo_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run_job([photo_dir / "a_landscape.jpg"], out, options(tiny_checkpoint))
    first = read_bundle(out).manifest["created"]
    run_job(
        [photo_dir / "a_landscape.jpg", photo_dir / "b_portrait.png"], out, options(tiny_checkpoint, overwrite=True)
    )
    assert len(read_bundle(out).manifest["images"]) == 2 and read_bundle(out).manifest["created"] >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "photos"]


def test_cancel_stops_the_job_and_leaves_nothing(tiny_checkpoint, photo_dir, tmp_path):
    cancel = threading.Event()

    class CancelAtRender(Progress):
        def update(self, stage, fraction, message=""):
            if stage == "render_keyframes":
                cancel.set()
            super().update(stage, fraction, message)

    with pytest.raises(Cancelled):
        run_job(
            sorted(photo_dir.iterdir()),
            tmp_path / "cancelled",
            options(tiny_checkpoint),
            progress=CancelAtRender(cancel_event=cancel),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_bad_options_are_refused_before_work(tiny_checkpoint, photo_dir, tmp_path):
    with pytest.raises(OptionsError, match="option 'postprocess' must be one of standard_v1, standard_v2, qubo"):
        run_job([photo_dir / "a_landscape.jpg"], tmp_path / "x", options(tiny_checkpoint, postprocess="magic"))
    with pytest.raises(OptionsError, match="option 'conf_threshold' must be a number >= 1, got 0.5"):
        run_job([photo_dir / "a_landscape.jpg"], tmp_path / "x", options(tiny_checkpoint, conf_threshold=0.5))


def test_splats_are_fitted_and_published_with_the_bundle(tiny_checkpoint, photo_dir, tmp_path):
    from panst3r_engine.splats import read_splats_ply, render_view
    from tests.pipeline.conftest import textured

    small = tmp_path / "small"
    small.mkdir()
    for i in range(3):  # 128x96 as they are: a few thousand points, so the CPU fit takes seconds
        Image.fromarray(textured(128, 96, 10 + i)).save(small / f"s{i}.png")
    result = run_job(
        sorted(small.iterdir()),
        tmp_path / "with_splats",
        options(tiny_checkpoint, conf_threshold=1.0, resize="none", splats=True, splat_steps=2),
    )
    bundle = read_bundle(result.bundle)
    assert bundle.manifest["splats"]["file"] == "splats.ply" and bundle.manifest["splats"]["steps"] == 2
    model = read_splats_ply(result.bundle / "splats.ply")
    assert bundle.manifest["splats"]["count"] > 0
    cam = bundle.manifest["cameras"][0]
    rgb, segments = render_view(result.bundle, np.array(cam["K"]), np.array(cam["cam_to_world"]), 64, 48)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and segments.shape == (48, 64)
    assert model is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "small", "with_splats"]
