"""The add-on's bundle reader against hostile bundles: every attack is one BundleError, decided before allocating.

Plain Python (no bpy): the reader, its PNG decoder and its splats reader are what Blender runs on a bundle.
"""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle.read import BundleError, read_bundle
from blender_addon.bundle.splats import read_splats
from tests.bundle import hostile
from tests.bundle.hostile import STEM


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return hostile.fresh_bundle(tmp_path)


def _peak(call) -> tuple[int, str]:
    """(peak bytes traced, message) while ``call()`` raises BundleError."""
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as info:
            call()
        return tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("relative", ["manifest.json", "points.npz", f"images/{STEM}.jpg", "images"])
def test_links_out_of_the_bundle_are_refused_when_reading(bundle: Path, relative: str) -> None:
    hostile.link_out(bundle, relative)
    with pytest.raises(BundleError, match="is a link; a bundle must hold its own files"):
        read_bundle(bundle)


@pytest.mark.parametrize("relative", [f"panoptic/{STEM}.png", "panoptic"])
def test_linked_panoptic_maps_are_refused(bundle: Path, relative: str) -> None:
    hostile.link_out(bundle, relative)
    with pytest.raises(BundleError, match="is a link"):
        read_bundle(bundle).panoptic(STEM)


def test_linked_splats_are_refused(bundle: Path) -> None:
    hostile.link_out(bundle, "splats.ply")
    with pytest.raises(BundleError, match="is a link"):
        read_splats(bundle / "splats.ply")


@pytest.mark.parametrize("name, value", [("xyz", np.nan), ("xyz", np.inf), ("conf", -np.inf)])
def test_non_finite_points_are_left_out(bundle: Path, name: str, value: float) -> None:
    with np.load(bundle / "points.npz") as npz:
        points = {key: npz[key] for key in npz.files}
    points[name] = points[name].copy()
    points[name].flat[7] = value
    np.savez(bundle / "points.npz", **points)
    row = 7 // points[name][0].size
    data = read_bundle(bundle)
    assert data.dropped_points == 1 and len(data.points["xyz"]) == len(points["xyz"]) - 1
    assert np.isfinite(data.points["xyz"]).all() and np.isfinite(data.points["conf"]).all()
    np.testing.assert_array_equal(data.points["segment"], np.delete(points["segment"], row))


def test_huge_declared_array_is_refused_without_allocating(bundle: Path) -> None:
    hostile.write_points(bundle, {"xyz": hostile.npy_header((10**12, 3))})
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "declares shape (1000000000000, 3) of <f4, which disagrees with its size" in message, message
    assert peak < 20 << 20, peak


def test_zip_bomb_is_refused_before_inflating(bundle: Path) -> None:
    hostile.write_bomb(bundle, 64 << 20)
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "would inflate to more than" in message and message.endswith("run the job again"), message
    assert peak < 20 << 20, peak


def test_pickled_points_are_refused(bundle: Path) -> None:
    hostile.write_points(bundle, {"conf": hostile.npy_header((180,), "|O")})
    with pytest.raises(BundleError, match="holds Python objects"):
        read_bundle(bundle)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_manifest_is_refused(bundle: Path, depth: int) -> None:
    hostile.deep_manifest(bundle, depth)
    with pytest.raises(BundleError, match="nests JSON deeper than 64 levels"):
        read_bundle(bundle)


def test_huge_manifest_is_refused_before_reading(bundle: Path) -> None:
    hostile.huge_manifest(bundle)
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "larger than 64 MiB" in message, message
    assert peak < 20 << 20, peak


def test_malformed_png_header_is_a_bundle_error(bundle: Path) -> None:
    (bundle / f"panoptic/{STEM}.png").write_bytes(hostile.malformed_png())
    with pytest.raises(BundleError, match="malformed PNG header"):
        read_bundle(bundle).panoptic(STEM)


def test_png_of_another_size_is_refused_before_decoding(bundle: Path) -> None:
    (bundle / f"panoptic/{STEM}.png").write_bytes(hostile.declared_png(9000, 9000))
    peak, message = _peak(lambda: read_bundle(bundle).panoptic(STEM))
    assert "is 9000x9000 pixels, but the bundle says 32x24" in message, message
    assert peak < 20 << 20, peak


def test_png_zlib_bomb_of_the_right_size_is_refused(bundle: Path) -> None:
    """32 x 24 declared, as the manifest says, but the image data inflates to 200 MB."""
    (bundle / f"panoptic/{STEM}.png").write_bytes(hostile.declared_png(32, 24, zlib.compress(bytes(200 << 20), 9)))
    peak, message = _peak(lambda: read_bundle(bundle).panoptic(STEM))
    assert "holds more image data than" in message, message
    assert peak < 20 << 20, peak


@pytest.mark.parametrize("size", [[100_000, 100_000], [float("inf"), 24], [0, 24]])
def test_impossible_processed_size_is_refused(bundle: Path, size: list) -> None:
    hostile.edit_manifest(bundle, lambda m: m["images"][0].update(processed_size=size))
    with pytest.raises(BundleError, match="processed_size|malformed field"):
        read_bundle(bundle)


@pytest.mark.parametrize("count", [b"abc", b"-1", b"1e9"])
def test_splats_count_that_is_not_a_number_is_refused(bundle: Path, count: bytes) -> None:
    (bundle / "splats.ply").write_bytes(hostile.splats_ply(count, 2))
    with pytest.raises(BundleError, match="unsupported PLY header line"):
        read_splats(bundle / "splats.ply")


def test_splats_count_beyond_the_file_is_refused_without_allocating(bundle: Path) -> None:
    (bundle / "splats.ply").write_bytes(hostile.splats_ply(b"1000000000000", 2))
    peak, message = _peak(lambda: read_splats(bundle / "splats.ply"))
    assert "is truncated: 2 of 1000000000000 Gaussians present" in message, message
    assert peak < 20 << 20, peak


ATTACKS = {
    "photo link": lambda b: hostile.link_out(b, f"images/{STEM}.jpg"),
    "splats link": lambda b: hostile.link_out(b, "splats.ply"),
    "zip bomb": lambda b: hostile.write_bomb(b, 64 << 20),
    "deep manifest": hostile.deep_manifest,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_import_operator_reports_hostile_bundles(addon, scene, bundle: Path, attack: str) -> None:
    """In real Blender: the import operator reports the sentence and leaves no objects behind."""
    ATTACKS[attack](bundle)
    with pytest.raises(RuntimeError, match="Cannot import the result: .*(is a link|inflate|nests JSON)"):
        addon.bpy.ops.panst3r.import_bundle(directory=str(bundle))
    assert not any("segment" in ob for ob in addon.bpy.data.objects)
