"""The engine's bundle reader against hostile bundles: every attack is one BundleError, decided before allocating."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.raw import load_raw
from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.splats.export import SplatsFileError, read_splats_ply
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


@pytest.mark.parametrize("relative", ["manifest.json", "points.npz", f"panoptic/{STEM}.png", "panoptic"])
def test_links_out_of_the_bundle_are_refused_when_reading(bundle: Path, relative: str) -> None:
    hostile.link_out(bundle, relative)
    with pytest.raises(BundleError, match="is a link; a bundle must hold its own files"):
        read_bundle(bundle)


@pytest.mark.parametrize("relative", [f"images/{STEM}.jpg", "images"])
def test_linked_photos_are_refused(bundle: Path, relative: str) -> None:
    hostile.link_out(bundle, relative)
    data = read_bundle(bundle)
    with pytest.raises(BundleError, match="is a link"):
        data.image(STEM)
    with pytest.raises(BundleError, match="is a link"):
        data.has_image(STEM)


def test_linked_extra_file_is_refused(bundle: Path) -> None:
    hostile.link_out(bundle, "splats.ply")
    with pytest.raises(BundleError, match="is a link"):
        read_bundle(bundle).extra("splats.ply")


def test_panoptic_file_outside_the_bundle_is_refused(bundle: Path) -> None:
    hostile.edit_manifest(bundle, lambda m: m["panoptic"][STEM].update(file="../outside.png"))
    with pytest.raises(BundleError, match="must name the file 'panoptic/IMG_0001.png'"):
        read_bundle(bundle)


def test_huge_declared_array_is_refused_without_allocating(bundle: Path) -> None:
    hostile.write_points(bundle, {"xyz": hostile.npy_header((10**12, 3))})
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "declares shape (1000000000000, 3) of <f4, which disagrees with its size" in message, message
    assert peak < 20 << 20, peak


def test_zip_bomb_is_refused_before_inflating(bundle: Path) -> None:
    hostile.write_bomb(bundle, 64 << 20)
    assert (bundle / "points.npz").stat().st_size < 1 << 20
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "would inflate to more than" in message and message.endswith("run the job again"), message
    assert peak < 20 << 20, peak


def test_member_smaller_than_its_header_declares_is_refused(bundle: Path) -> None:
    hostile.write_points(bundle, {"conf": hostile.npy_header((180,)) + b"\0" * 8}, compress=True)
    with pytest.raises(BundleError, match="declares shape \\(180,\\) of <f4, which disagrees with its size"):
        read_bundle(bundle)


def test_pickled_points_are_refused(bundle: Path) -> None:
    hostile.write_points(bundle, {"conf": hostile.npy_header((180,), "|O")})
    with pytest.raises(BundleError, match="holds Python objects"):
        read_bundle(bundle)


def test_manifest_nested_100000_deep_is_refused(bundle: Path) -> None:
    hostile.deep_manifest(bundle)
    with pytest.raises(BundleError, match="nests JSON deeper than 64 levels"):
        read_bundle(bundle)


def test_manifest_nested_100_deep_is_refused(bundle: Path) -> None:
    hostile.deep_manifest(bundle, 100)
    with pytest.raises(BundleError, match="nests JSON deeper than 64 levels"):
        read_bundle(bundle)


def test_huge_manifest_is_refused_before_reading(bundle: Path) -> None:
    hostile.huge_manifest(bundle)
    peak, message = _peak(lambda: read_bundle(bundle))
    assert "larger than 64 MiB" in message, message
    assert peak < 20 << 20, peak


def test_malformed_png_header_is_a_bundle_error(bundle: Path) -> None:
    (bundle / f"panoptic/{STEM}.png").write_bytes(hostile.malformed_png())
    with pytest.raises(BundleError, match=f"cannot decode .*{STEM}.png as PNG"):
        read_bundle(bundle).panoptic(STEM)


def test_png_of_another_size_is_refused_before_decoding(bundle: Path) -> None:
    (bundle / f"panoptic/{STEM}.png").write_bytes(hostile.declared_png(9000, 9000))
    peak, message = _peak(lambda: read_bundle(bundle).panoptic(STEM))
    assert "must be an RGB image of 32x24, found RGB (9000, 9000)" in message, message
    assert peak < 50 << 20, peak


def test_photo_in_another_format_is_refused(bundle: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 24)).save(bundle / f"images/{STEM}.jpg", format="PNG")
    with pytest.raises(BundleError, match="as JPEG"):
        read_bundle(bundle).image(STEM)


def test_huge_processed_size_is_refused(bundle: Path) -> None:
    hostile.edit_manifest(bundle, lambda m: m["images"][0].update(processed_size=[100_000, 100_000]))
    with pytest.raises(BundleError, match="exceeds 67108864 pixels"):
        read_bundle(bundle)


@pytest.mark.parametrize("count", [b"abc", b"-1", b"1e9"])
def test_splats_count_that_is_not_a_number_is_refused(bundle: Path, count: bytes) -> None:
    (bundle / "splats.ply").write_bytes(hostile.splats_ply(count, 2))
    with pytest.raises(SplatsFileError, match="unexpected PLY header line"):
        read_splats_ply(read_bundle(bundle).extra("splats.ply"))


def test_raw_npz_bomb_is_refused(tmp_path: Path) -> None:
    bundle = hostile.fresh_bundle(tmp_path)
    hostile.write_bomb(bundle, 64 << 20)
    peak, message = _peak(lambda: load_raw(bundle / "points.npz"))
    assert "would inflate to more than" in message, message
    assert peak < 20 << 20, peak


def test_raw_npz_written_by_numpy_still_loads(tmp_path: Path) -> None:
    arrays = {
        "pred_logits": np.ones((3, 4), np.float32),
        "pred_masks": np.zeros((1, 3, 2, 2), np.float32),
        "true_shape": np.array([[4, 4]], np.int32),
        "class_names": np.array(["a", "b"]),
    }
    np.savez_compressed(tmp_path / "raw.npz", **arrays)
    loaded = load_raw(tmp_path / "raw.npz")
    for name, arr in arrays.items():
        np.testing.assert_array_equal(loaded[name], arr)


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    from panst3r_engine.bundle.spec import MAX_JSON_DEPTH, load_json

    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deepest.encode(), "m") == json.loads(deepest)  # exactly the limit is allowed
    with pytest.raises(ValueError, match=f"nests JSON deeper than {MAX_JSON_DEPTH} levels"):
        load_json(("[" + deepest + "]").encode(), "m")
    quoted = {"a": "[" * 200 + '\\"{', "b": [{"c": "]]]"}]}
    assert load_json(json.dumps(quoted).encode(), "m") == quoted
