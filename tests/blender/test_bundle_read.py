"""The add-on's bundle reader (plain Python) against the engine's writer and reader."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.bundle.png import PngError, read_png
from blender_addon.bundle.read import BundleError, read_bundle
from panst3r_engine.bundle.read import read_bundle as engine_read_bundle


def test_same_data_as_the_engine_reader(synthetic_bundle: Path) -> None:
    ours, theirs = read_bundle(synthetic_bundle), engine_read_bundle(synthetic_bundle)
    for name, arr in theirs.points.items():
        assert ours.points[name].dtype == arr.dtype and np.array_equal(ours.points[name], arr), name
    assert [c.stem for c in ours.cameras] == theirs.stems
    for cam, entry in zip(ours.cameras, theirs.manifest["cameras"]):
        np.testing.assert_array_equal(cam.K, entry["K"])
        np.testing.assert_array_equal(cam.cam_to_world, entry["cam_to_world"])
        assert cam.photo is not None and cam.photo.is_file()
    assert {c.id: (c.name, list(c.color)) for c in ours.classes.values()} == {
        c["id"]: (c["name"], c["color"]) for c in theirs.manifest["classes"]
    }
    assert [(s.id, s.class_id, s.point_count) for s in ours.segments] == [
        (s["id"], s["class_id"], s["point_count"]) for s in theirs.manifest["segments"]
    ]
    assert ours.reference_image == 0 and ours.name == "synthetic"


def test_panoptic_maps_decode_like_the_engine(synthetic_bundle: Path) -> None:
    ours, theirs = read_bundle(synthetic_bundle), engine_read_bundle(synthetic_bundle)
    for stem in theirs.stems:
        np.testing.assert_array_equal(ours.panoptic(stem), theirs.panoptic(stem))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_decoder_matches_pillow(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    smooth = np.add.outer(np.arange(37), np.arange(53))[..., None] * np.arange(1, channels + 1)
    pixels = ((smooth + rng.integers(0, 4, (37, 53, channels))) % 256).astype(np.uint8)  # mixes all row filters
    path = tmp_path / f"x_{mode}.png"
    Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode).save(path)
    np.testing.assert_array_equal(read_png(path), pixels)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _encode_png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A PNG of uint8 [H, W, 3] with the given filter per row (forward filters of PNG spec section 9)."""
    height, width, bpp = pixels.shape
    rows, prev = [], [0] * (width * bpp)
    for y in range(height):
        line, kind, out = pixels[y].ravel().tolist(), filters[y % len(filters)], []
        for i, x in enumerate(line):
            a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append((x - pred) % 256)
        rows.append(bytes([kind] + out))
        prev = line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_png_decoder_undoes_every_row_filter(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (10, 7, 3)).astype(np.uint8)
    path = tmp_path / "filters.png"
    path.write_bytes(_encode_png(pixels, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(read_png(path), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)  # the encoder itself is right


def test_png_decoder_refuses_16_bit(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.new("I;16", (4, 4)).save(path)
    with pytest.raises(PngError, match="8-bit"):
        read_png(path)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(bundle, out)
    return out


def _edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_refuses_a_new_major_version(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    _edit_manifest(bundle, format_version="2.0")
    with pytest.raises(BundleError, match="format version 2.0.*update the PanSt3R add-on"):
        read_bundle(bundle)


def test_reads_a_newer_minor_version_with_unknown_fields(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    _edit_manifest(bundle, format_version="1.7", something_new={"a": 1})
    assert read_bundle(bundle / "manifest.json").format_version == "1.7"


def test_clear_errors_for_broken_bundles(synthetic_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a PanSt3R result bundle"):
        read_bundle(tmp_path)
    bundle = _copy(synthetic_bundle, tmp_path)
    points = dict(np.load(bundle / "points.npz"))
    points["segment"] = np.where(points["segment"] == 1, 99, points["segment"]).astype(np.int32)
    np.savez(bundle / "points.npz", **points)
    with pytest.raises(BundleError, match=r"segment ids \[99\]"):
        read_bundle(bundle)
    points["segment"] = points["segment"].astype(np.float32)
    np.savez(bundle / "points.npz", **points)
    with pytest.raises(BundleError, match="'segment' has dtype float32"):
        read_bundle(bundle)
    (bundle / "points.npz").unlink()
    with pytest.raises(BundleError, match="no points.npz"):
        read_bundle(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(bundle)


@pytest.mark.parametrize("stem", ["../outside", "sub/name", "C:evil", "CON", ".hidden", "x\n"])
def test_refuses_a_stem_that_is_not_a_plain_file_name(synthetic_bundle: Path, tmp_path: Path, stem: str) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    images[1]["stem"] = stem
    _edit_manifest(bundle, images=images)
    with pytest.raises(BundleError, match="not a plain file name"):
        read_bundle(bundle)


def test_refuses_a_stem_listed_twice(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    images[1]["stem"] = images[0]["stem"].upper()
    _edit_manifest(bundle, images=images)
    with pytest.raises(BundleError, match="stem twice"):
        read_bundle(bundle)


def test_panoptic_file_comes_from_the_stem_not_the_manifest(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    stem = manifest["images"][0]["stem"]
    expected = read_bundle(bundle).panoptic(stem)
    outside = tmp_path / "outside.png"
    Image.fromarray(np.full((*expected.shape, 3), 7, np.uint8)).save(outside)
    manifest["panoptic"][stem]["file"] = "../outside.png"
    _edit_manifest(bundle, panoptic=manifest["panoptic"])
    data = read_bundle(bundle)
    np.testing.assert_array_equal(data.panoptic(stem), expected)
    with pytest.raises(BundleError, match="no panoptic map"):
        data.panoptic("../outside")


def test_refuses_integers_that_do_not_fit_the_format_dtype(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    points = dict(np.load(bundle / "points.npz"))
    points["segment"] = points["segment"].astype(np.int64) + np.where(points["segment"] > 0, 2**32, 0)
    np.savez(bundle / "points.npz", **points)  # would wrap back to the listed ids in int32
    with pytest.raises(BundleError, match="'segment' holds values outside the range of int32"):
        read_bundle(bundle)
