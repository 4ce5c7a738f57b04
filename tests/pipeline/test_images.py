"""Photo loading: orientation, pixel formats, the official 512 crop/resize, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from panst3r_engine.pipeline.images import (
    ImageError,
    crop_box_for,
    load_photo,
    load_photos,
    target_size_512,
    to_photo_orientation,
)


@pytest.mark.parametrize(
    "size, target, box",
    [
        ((4032, 3024), (512, 384), (0, 0, 4032, 3024)),  # 4:3, resized only
        ((3024, 4032), (384, 512), (0, 0, 3024, 4032)),  # portrait 3:4
        ((1920, 1080), (512, 288), (0, 0, 1920, 1080)),  # 16:9
        ((1000, 1000), (512, 384), (0, 125, 1000, 875)),  # square -> 4:3, centre crop of the height
        ((2000, 1000), (512, 256), (0, 0, 2000, 1000)),  # 2:1
        ((1700, 1000), (512, 288), (0, 22, 1700, 978)),  # 1.7 -> 16:9: too tall, crop_H = int(1700 * 9/16) = 956
        ((1000, 1900), (256, 512), (25, 0, 975, 1900)),  # portrait 0.526 -> 1:2: too wide, crop_W = int(1900 / 2) = 950
    ],
)
def test_target_sizes_and_crops_follow_the_official_loader(size, target, box):
    assert target_size_512(*size) == target
    x0, y0, x1, y1 = crop_box_for(*size, target)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(target[0] / target[1], abs=2e-3)
    assert (x0, y0, x1, y1) == box


def _save(tmp_path, name, array, **kw):
    path = tmp_path / name
    Image.fromarray(array).save(path, **kw)
    return path


def test_resize_matches_normalise_then_antialiased_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    photo = load_photo(_save(tmp_path, "a.png", rgb))
    x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    expected = F.interpolate(x[None], size=(384, 512), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(photo.tensor, expected)
    assert photo.processed_size == (512, 384) and not photo.transposed


def test_portrait_runs_transposed_and_comes_back(tmp_path):
    rgb = np.zeros((400, 300, 3), np.uint8)
    rgb[:50] = 255  # bright top rows
    photo = load_photo(_save(tmp_path, "p.png", rgb))
    assert photo.transposed and photo.processed_size == (384, 512)
    assert photo.tensor.shape == (3, 384, 512)  # landscape for the network
    assert photo.tensor[:, :, :40].mean() > 0.9  # the top of the photo is now the left of the tensor
    back = to_photo_orientation(photo.tensor.permute(1, 2, 0), True, (0, 1))
    assert back.shape == (512, 384, 3) and back[:40].mean() > 0.9


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((300, 400, 3), np.uint8)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    photo = load_photo(path)
    assert photo.original_size == (300, 400)  # as displayed: portrait
    assert photo.transposed


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_pixel_formats_are_converted(tmp_path, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (240, 320), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    image.save(path)
    photo = load_photo(path)
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (384, 512, 3)
    if mode == "I;16":
        assert photo.rgb.max() > 200  # rescaled from 16 bits, not clipped to white or black
        assert photo.rgb.min() < 50


def test_bad_files_are_all_named_before_any_work(tmp_path):
    good = _save(tmp_path, "good.png", np.zeros((240, 320, 3), np.uint8))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    tiny = _save(tmp_path, "tiny.png", np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(ImageError) as info:
        load_photos([good, tmp_path / "empty.jpg", tmp_path / "text.png", tiny, tmp_path / "missing.jpg"])
    message = str(info.value)
    assert "4 photos cannot be used" in message or all(
        name in message for name in ("empty.jpg", "text.png", "tiny.png", "missing.jpg")
    )
    assert "empty.jpg: file is empty" in message


def test_resize_none_requires_multiples_of_16(tmp_path):
    path = _save(tmp_path, "odd.png", np.zeros((100, 130, 3), np.uint8))
    with pytest.raises(ImageError, match="odd.png: 130x100 pixels; with --resize none"):
        load_photo(path, resize="none")
    assert load_photo(_save(tmp_path, "ok.png", np.zeros((96, 128, 3), np.uint8)), resize="none").processed_size == (
        128,
        96,
    )
