"""Result bundle: round trip of every field, atomic writes, refusals with clear messages."""

from __future__ import annotations

import copy
import errno
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.bundle.checks import BundleError, check_stem, panoptic_segments_info
from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.bundle.spec import FORMAT_VERSION, decode_panoptic, encode_panoptic
from panst3r_engine.bundle.write import make_stems, write_bundle
from panst3r_engine.vocab.colors import class_colors, instance_colors
from tests.bundle_utils import SEGMENT_CLASSES, make_bundle_inputs


@pytest.fixture()
def inputs() -> tuple[dict, dict, dict, dict]:
    return make_bundle_inputs()


@pytest.fixture()
def written(tmp_path: Path, inputs) -> Path:
    return write_bundle(tmp_path / "job", *inputs)


def _leftovers(parent: Path) -> list[str]:
    """Names in parent other than the test's own inputs: temp or half-written folders."""
    return sorted(p.name for p in parent.iterdir() if p.name not in ("src",))


# ---------------------------------------------------------------- round trip
def test_round_trip_keeps_given_fields(written: Path, inputs) -> None:
    manifest, points, panoptic, photos = inputs
    bundle = read_bundle(written)
    for key in ("engine", "model", "options", "timings", "images", "cameras"):
        assert bundle.manifest[key] == manifest[key], key
    for given, read in zip(manifest["classes"], bundle.manifest["classes"]):
        assert {k: read[k] for k in given} == given
    for given, read in zip(manifest["segments"], bundle.manifest["segments"]):
        assert {k: read[k] for k in given} == given
    assert set(bundle.points) == set(points)
    for name, arr in points.items():
        assert bundle.points[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(bundle.points[name], arr, err_msg=name)
    for stem, ids in panoptic.items():
        read = bundle.panoptic(stem)
        assert read.dtype == np.int32
        np.testing.assert_array_equal(read, ids)
        photo = bundle.image(stem)
        assert photo.dtype == np.uint8 and photo.shape == photos[stem].shape
        # JPEG at quality 95 of a smooth gradient: mean error well under 2 grey levels
        assert np.abs(photo.astype(int) - photos[stem]).mean() < 2.0


def test_writer_fills_derived_fields(written: Path, inputs) -> None:
    manifest, points, panoptic, _ = inputs
    m = read_bundle(written).manifest
    assert m["format_version"] == FORMAT_VERSION
    assert datetime.fromisoformat(m["created"]).utcoffset() == UTC.utcoffset(None)
    used = [i for i, c in enumerate(manifest["classes"]) if c["id"] in {s["class_id"] for s in manifest["segments"]}]
    expected = class_colors([c["name"] for c in manifest["classes"]], used)
    assert [c["color"] for c in m["classes"]] == [list(c) for c in expected]
    stems = [im["stem"] for im in manifest["images"]]
    for seg in m["segments"]:
        mask = points["segment"] == seg["id"]
        assert seg["point_count"] == int(mask.sum())
        map_views = {v for v, stem in enumerate(stems) if (panoptic[stem] == seg["id"]).any()}
        assert seg["views"] == sorted(map_views | set(points["view"][mask].tolist()))
        if mask.any():
            assert seg["bbox_min"] == points["xyz"][mask].min(0).tolist()
            assert seg["bbox_max"] == points["xyz"][mask].max(0).tolist()
        else:
            assert seg["bbox_min"] is None and seg["bbox_max"] is None
    assert m["segments"][-1]["point_count"] == 0  # segment 7 has pixels only


def test_segments_info_matches_maps(written: Path, inputs) -> None:
    _, _, panoptic, _ = inputs
    bundle = read_bundle(written)
    for stem, ids in panoptic.items():
        entry = bundle.manifest["panoptic"][stem]
        assert entry["file"] == f"panoptic/{stem}.png"
        assert [s["id"] for s in entry["segments_info"]] == sorted(set(np.unique(ids).tolist()) - {0})
        for info in entry["segments_info"]:
            rows, cols = np.nonzero(ids == info["id"])
            assert info["area"] == len(rows)
            assert info["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert info["category_id"] == SEGMENT_CLASSES[info["id"]] and info["iscrowd"] == 0


def test_manifest_is_strict_ascii_json_and_caller_dict_untouched(tmp_path: Path, inputs) -> None:
    manifest = inputs[0]
    manifest["images"][0]["file"] = "Küche.JPG"
    before = copy.deepcopy(manifest)
    write_bundle(tmp_path / "job", *inputs)
    assert manifest == before
    raw = (tmp_path / "job" / "manifest.json").read_bytes()
    assert raw.isascii()
    assert json.loads(raw)["images"][0]["file"] == "Küche.JPG"


def test_panoptic_png_uses_coco_encoding(written: Path, inputs) -> None:
    stem = "portrait"
    rgb = np.asarray(Image.open(written / "panoptic" / f"{stem}.png"))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    rgb = rgb.astype(np.int64)  # before the arithmetic: NumPy 2 refuses 256 * uint8 (out of bounds)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    np.testing.assert_array_equal(ids, inputs[2][stem])


def test_extra_files_pass_through(tmp_path: Path, inputs) -> None:
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "splats.bin"
    src.write_bytes(b"ply\x00data")
    bundle = read_bundle(write_bundle(tmp_path / "job", *inputs, extra_files={"splats.ply": src}))
    assert bundle.extra("splats.ply").read_bytes() == b"ply\x00data"
    assert bundle.extra("raw.npz") is None
    with pytest.raises(BundleError, match="reserved"):
        write_bundle(tmp_path / "job2", *inputs, extra_files={"points.npz": src})


def test_given_segments_info_kept(tmp_path: Path, inputs) -> None:
    manifest = inputs[0]
    info = [{"id": 1, "category_id": 0, "area": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0}]
    manifest["panoptic"] = {"IMG_0001": {"segments_info": info}}
    bundle = read_bundle(write_bundle(tmp_path / "job", *inputs))
    assert bundle.manifest["panoptic"]["IMG_0001"]["segments_info"] == info
    assert len(bundle.manifest["panoptic"]["IMG_0002"]["segments_info"]) == 3


# ---------------------------------------------------------------- overwrite and atomicity
def test_existing_folder_refused_without_overwrite(written: Path, inputs) -> None:
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(written, *inputs)


def test_overwrite_replaces_bundle(written: Path, inputs) -> None:
    (written / "raw.npz").write_bytes(b"old")  # an optional file of the format
    inputs[0]["options"] = {"run": 2}
    write_bundle(written, *inputs, overwrite=True)
    assert not (written / "raw.npz").exists()
    assert read_bundle(written).manifest["options"] == {"run": 2}
    assert _leftovers(written.parent) == ["job"]


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path, inputs) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a readable result bundle"):
        write_bundle(tmp_path / "job", *inputs, overwrite=True)
    assert (tmp_path / "job" / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_folder_that_merely_holds_a_manifest(written: Path, tmp_path: Path, inputs) -> None:
    (tmp_path / "mine" / "src").mkdir(parents=True)
    (tmp_path / "mine" / "src" / "important.txt").write_text("mine")
    (tmp_path / "mine" / "manifest.json").write_bytes((written / "manifest.json").read_bytes())
    with pytest.raises(BundleError, match="refusing to replace .*mine: it is not a readable result bundle"):
        write_bundle(tmp_path / "mine", *inputs, overwrite=True)
    assert (tmp_path / "mine" / "src" / "important.txt").read_text() == "mine"


@pytest.mark.parametrize("extra", ["src/important.txt", "stale.txt", "panoptic/notes.txt", "images/other.jpg"])
def test_overwrite_refuses_a_bundle_holding_other_files(written: Path, inputs, extra: str) -> None:
    (written / extra).parent.mkdir(exist_ok=True)
    (written / extra).write_text("mine")
    named = extra.split("/")[0] if extra.startswith("src") else extra
    with pytest.raises(BundleError, match=f"besides a result bundle it holds {named}; move those away"):
        write_bundle(written, *inputs, overwrite=True)
    assert (written / extra).read_text() == "mine"


def test_overwrite_refuses_a_bundle_holding_a_link(written: Path, tmp_path: Path, inputs) -> None:
    (tmp_path / "target.ply").write_text("mine")
    (written / "splats.ply").symlink_to(tmp_path / "target.ply")
    with pytest.raises(BundleError, match="holds splats.ply; move those away"):
        write_bundle(written, *inputs, overwrite=True)


def _corrupt(name: str, inputs) -> None:
    """Break one thing in the inputs, in place."""
    manifest, points, panoptic, photos = inputs
    if name == "xyz shape":
        points["xyz"] = points["xyz"][:, :2]
    elif name == "N mismatch":
        points["conf"] = points["conf"][:-1]
    elif name == "NaN xyz":
        points["xyz"][3, 1] = np.nan
    elif name == "float rgb":
        points["rgb"] = points["rgb"].astype(np.float32)
    elif name == "unknown segment":
        points["segment"][0] = 99
    elif name == "pixel outside":
        points["pixel"][0] = [40, 0]
    elif name == "view out of range":
        points["view"][0] = 3
    elif name == "missing array":
        del points["pixel"]
    elif name == "map shape":
        panoptic["portrait"] = panoptic["portrait"].T
    elif name == "map unknown id":
        panoptic["IMG_0001"][0, 0] = 55
    elif name == "photo dtype":
        photos["IMG_0001"] = photos["IMG_0001"].astype(np.float32)
    elif name == "duplicate stem":
        manifest["images"][1]["stem"] = "img_0001"
    elif name == "unsafe stem":
        manifest["images"][1]["stem"] = "../evil"
    elif name == "missing camera":
        manifest["cameras"].pop()
    elif name == "unknown class":
        manifest["segments"][0]["class_id"] = 9
    elif name == "point_count mismatch":
        manifest["segments"][0]["point_count"] = 1
    elif name == "NaN in options":
        manifest["options"]["threshold"] = float("nan")
    elif name == "bad model version":
        manifest["model"]["version"] = "v3"


@pytest.mark.parametrize(
    "name",
    [
        "xyz shape",
        "N mismatch",
        "NaN xyz",
        "float rgb",
        "unknown segment",
        "pixel outside",
        "view out of range",
        "missing array",
        "map shape",
        "map unknown id",
        "photo dtype",
        "duplicate stem",
        "unsafe stem",
        "missing camera",
        "unknown class",
        "point_count mismatch",
        "NaN in options",
        "bad model version",
    ],
)
def test_invalid_input_refused_and_nothing_written(tmp_path: Path, inputs, name: str) -> None:
    _corrupt(name, inputs)
    with pytest.raises(BundleError) as info:
        write_bundle(tmp_path / "job", *inputs)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["savez", "png"])
def test_disk_full_leaves_nothing(tmp_path: Path, inputs, monkeypatch, target: str) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "savez":
        monkeypatch.setattr(np, "savez", full)
    else:
        monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(BundleError, match="not enough disk space"):
        write_bundle(tmp_path / "job", *inputs)
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_bundle(written: Path, inputs, monkeypatch) -> None:
    before = (written / "manifest.json").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(BundleError, match="not enough disk space"):
        write_bundle(written, *inputs, overwrite=True)
    assert (written / "manifest.json").read_bytes() == before
    assert _leftovers(written.parent) == ["job"]
    read_bundle(written)


def test_other_os_errors_become_bundle_errors(tmp_path: Path, inputs, monkeypatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(np, "savez", denied)
    with pytest.raises(BundleError, match="writable"):
        write_bundle(tmp_path / "job", *inputs)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- reader refusals
def _edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_unknown_major_version_refused(written: Path) -> None:
    _edit_manifest(written, format_version="2.0")
    with pytest.raises(BundleError, match=r"2\.0.*1\.x.*update"):
        read_bundle(written)


def test_newer_minor_version_with_unknown_fields_accepted(written: Path) -> None:
    _edit_manifest(written, format_version="1.7", future_field={"x": 1})
    assert read_bundle(written).manifest["future_field"] == {"x": 1}


def test_reader_keeps_unknown_point_arrays_of_the_same_length(written: Path) -> None:
    with np.load(written / "points.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    np.savez(written / "points.npz", normal=np.zeros((len(arrays["xyz"]), 3), np.float32), **arrays)
    assert read_bundle(written).points["normal"].shape == (len(arrays["xyz"]), 3)
    np.savez(written / "points.npz", normal=np.zeros((2, 3), np.float32), **arrays)
    with pytest.raises(BundleError, match="disagree on the number of points"):
        read_bundle(written)


@pytest.mark.parametrize("version", ["1", "one", 1.0, None])
def test_malformed_version_refused(written: Path, version) -> None:
    _edit_manifest(written, format_version=version)
    with pytest.raises(BundleError, match="MAJOR.MINOR"):
        read_bundle(written)


def test_missing_or_broken_manifest_refused(written: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        read_bundle(tmp_path / "empty")
    (written / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(written)


def test_reader_refuses_missing_fields_and_files(written: Path) -> None:
    manifest = json.loads((written / "manifest.json").read_text())
    del manifest["cameras"]
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="cameras"):
        read_bundle(written)


def test_reader_refuses_missing_panoptic_png(written: Path) -> None:
    (written / "panoptic" / "portrait.png").unlink()
    with pytest.raises(BundleError, match="panoptic/portrait.png"):
        read_bundle(written)


@pytest.mark.parametrize("change", ["short conf", "float64 xyz", "missing view", "garbage"])
def test_reader_refuses_inconsistent_points(written: Path, change: str) -> None:
    with np.load(written / "points.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    if change == "short conf":
        arrays["conf"] = arrays["conf"][:-2]
    elif change == "float64 xyz":
        arrays["xyz"] = arrays["xyz"].astype(np.float64)
    elif change == "missing view":
        del arrays["view"]
    if change == "garbage":
        (written / "points.npz").write_bytes(b"PK\x03\x04 truncated")
    else:
        np.savez(written / "points.npz", **arrays)
    with pytest.raises(BundleError):
        read_bundle(written)


def test_lazy_accessors_refuse_unknown_stems(written: Path) -> None:
    bundle = read_bundle(written)
    with pytest.raises(BundleError, match="no image with stem"):
        bundle.panoptic("nope")
    (written / "images" / "portrait.jpg").unlink()
    assert not bundle.has_image("portrait")
    with pytest.raises(BundleError, match="portrait.jpg"):
        bundle.image("portrait")


# ---------------------------------------------------------------- helpers
def test_panoptic_encoding_round_trip() -> None:
    ids = np.random.default_rng(1).integers(0, 2**24, (17, 23)).astype(np.int32)
    rgb = encode_panoptic(ids)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(decode_panoptic(rgb), ids)
    np.testing.assert_array_equal(encode_panoptic(np.array([[1 + 2 * 256 + 3 * 65536]]))[0, 0], [1, 2, 3])


def test_segments_info_hand_made() -> None:
    ids = np.zeros((5, 6), np.int32)
    ids[1:3, 2:5] = 4
    ids[4, 0] = 9
    assert panoptic_segments_info(ids, {4: 1, 9: 2}) == [
        {"id": 4, "category_id": 1, "area": 6, "bbox": [2, 1, 3, 2], "iscrowd": 0},
        {"id": 9, "category_id": 2, "area": 1, "bbox": [0, 4, 1, 1], "iscrowd": 0},
    ]
    assert panoptic_segments_info(np.zeros((2, 2), np.int32), {}) == []


def test_make_stems_unique_and_safe() -> None:
    stems = make_stems(["a/IMG 1.JPG", "b/img 1.jpg", "c/..hidden.png", "d/CON.jpg", "e/Küche.jpg", "f/.jpg"])
    assert len({s.casefold() for s in stems}) == len(stems)
    assert stems[0] == "IMG_1" and stems[4] == "Küche"
    for stem in stems:
        check_stem(stem, "stem")  # every produced stem passes the writer's checks


def test_writer_keeps_given_class_colours_and_avoids_them(tmp_path: Path, inputs) -> None:
    """A class with a colour keeps it; the others are filled from the palette, away from it."""
    manifest, points, panoptic, photos = inputs
    manifest = {**manifest, "classes": [dict(c) for c in manifest["classes"]]}
    manifest["classes"][0]["color"] = [10, 200, 30]
    m = read_bundle(write_bundle(tmp_path / "given", manifest, points, panoptic, photos)).manifest
    names = [c["name"] for c in manifest["classes"]]
    assert m["classes"][0]["color"] == [10, 200, 30]
    expected = class_colors(names, [0, 1, 2], fixed={0: (10, 200, 30)})
    assert [c["color"] for c in m["classes"]] == [list(c) for c in expected]


def test_instance_colors_distinct() -> None:
    colors = instance_colors(range(1, 31))
    assert colors.shape == (30, 3) and colors.dtype == np.uint8
    colors = colors.astype(int)
    dist = np.abs(colors[:, None] - colors[None]).sum(-1)
    assert dist[~np.eye(30, dtype=bool)].min() > 20
    np.testing.assert_array_equal(instance_colors([5, 6]), instance_colors([5, 6]))
