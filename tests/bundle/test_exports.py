"""Exports: per-segment PLY, COCO panoptic and GLB, each parsed back with numpy/struct/json only."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.bundle.exports import export_coco_panoptic, export_glb, export_instance_plys
from panst3r_engine.bundle.read import Bundle, read_bundle
from panst3r_engine.bundle.write import write_bundle
from tests.bundle_utils import SEGMENT_CLASSES, make_bundle_inputs

PLY_TYPES = {"float": "<f4", "uchar": "u1", "int": "<i4"}
Y_UP = np.array([1, -1, -1], np.float32)


@pytest.fixture()
def bundle(tmp_path: Path) -> Bundle:
    return read_bundle(write_bundle(tmp_path / "job", *make_bundle_inputs()))


def read_ply(path: Path) -> np.ndarray:
    """A minimal binary little-endian PLY reader (one vertex element) built from the header."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    fields = [(line.split()[2], PLY_TYPES[line.split()[1]]) for line in lines if line.startswith("property")]
    vertices = np.frombuffer(data, dtype=np.dtype(fields), count=count, offset=end)
    assert end + vertices.nbytes == len(data)
    return vertices


def read_glb(path: Path) -> tuple[dict, bytes]:
    """Parse a GLB: check header and chunk layout; returns (JSON document, BIN chunk)."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(data[20 : 20 + json_len])
    offset, binary = 20 + json_len, b""
    if offset < len(data):
        bin_len, bin_type = struct.unpack_from("<II", data, offset)
        assert bin_type == 0x004E4942 and bin_len % 4 == 0 and offset + 8 + bin_len == len(data)
        binary = data[offset + 8 : offset + 8 + bin_len]
        assert doc["buffers"][0]["byteLength"] <= bin_len
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Decode a float VEC3 or normalised uint8 VEC4 accessor, honouring byteStride."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype, width = {(5126, "VEC3"): ("<f4", 3), (5121, "VEC4"): ("u1", 4)}[(acc["componentType"], acc["type"])]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    assert start % 4 == 0 and view["byteStride"] == width * np.dtype(dtype).itemsize
    raw = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start)
    assert start + raw.nbytes <= view.get("byteOffset", 0) + view["byteLength"]
    return raw.reshape(acc["count"], width)


# ---------------------------------------------------------------- PLY
def test_instance_plys_hold_each_segment(bundle: Bundle, tmp_path: Path) -> None:
    paths = export_instance_plys(bundle, tmp_path / "ply")
    points = bundle.points
    expected = [f"{name}.ply" for name in ("wall_1", "chair_2", "chair_3", "dining_table_4", "unlabelled")]
    assert [p.name for p in paths] == expected  # segment 7 has no points: no file
    for path in paths:
        vertices = read_ply(path)
        assert vertices.dtype.names == ("x", "y", "z", "red", "green", "blue", "class", "segment")
        segment = 0 if path.stem == "unlabelled" else int(path.stem.rsplit("_", 1)[1])
        mask = points["segment"] == segment
        assert len(vertices) == mask.sum()
        np.testing.assert_array_equal(np.stack([vertices[a] for a in "xyz"], 1), points["xyz"][mask])
        np.testing.assert_array_equal(np.stack([vertices[c] for c in ("red", "green", "blue")], 1), points["rgb"][mask])
        assert (vertices["segment"] == segment).all()
        assert (vertices["class"] == SEGMENT_CLASSES.get(segment, -1)).all()
    assert sum(len(read_ply(p)) for p in paths) == len(points["xyz"])


def test_instance_plys_y_up(bundle: Bundle, tmp_path: Path) -> None:
    path = export_instance_plys(bundle, tmp_path / "ply", y_up=True)[0]
    vertices = read_ply(path)
    mask = bundle.points["segment"] == 1
    np.testing.assert_array_equal(np.stack([vertices[a] for a in "xyz"], 1), bundle.points["xyz"][mask] * Y_UP)


# ---------------------------------------------------------------- COCO panoptic
def test_coco_panoptic_consistent_with_pngs(bundle: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    coco = json.loads(export_coco_panoptic(bundle, out).read_text())
    classes = {c["id"]: c["name"] for c in bundle.manifest["classes"]}
    assert sorted(classes) == [0, 1, 2]
    assert {c["id"]: c["name"] for c in coco["categories"]} == {k + 1: name for k, name in classes.items()}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert all(set(c) >= {"id", "name", "isthing", "color"} and c["isthing"] in (0, 1) for c in coco["categories"])
    categories = {c["id"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    assert len(coco["annotations"]) == len(images) == 3
    for ann in coco["annotations"]:
        image = images[ann["image_id"]]
        rgb = np.asarray(Image.open(out / "panoptic" / ann["file_name"]).convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert ids.shape == (image["height"], image["width"])
        assert (out / "images" / image["file_name"]).is_file()
        assert sorted(s["id"] for s in ann["segments_info"]) == sorted(set(np.unique(ids).tolist()) - {0})
        for info in ann["segments_info"]:
            rows, cols = np.nonzero(ids == info["id"])
            assert info["area"] == len(rows)
            assert info["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert info["category_id"] in categories and info["iscrowd"] == 0
            class_id = bundle.segments_by_id[info["id"]]["class_id"]
            assert info["category_id"] == class_id + 1 and names[info["category_id"]] == classes[class_id]
        np.testing.assert_array_equal(ids, bundle.panoptic(Path(ann["file_name"]).stem))


# ---------------------------------------------------------------- GLB
def test_glb_points_per_segment(bundle: Bundle, tmp_path: Path) -> None:
    doc, binary = read_glb(export_glb(bundle, tmp_path / "scene.glb"))
    points = bundle.points
    assert doc["asset"]["version"] == "2.0"
    root = doc["nodes"][doc["scenes"][doc["scene"]]["nodes"][0]]
    children = [doc["nodes"][i] for i in root["children"]]
    assert [n["name"] for n in children] == ["unlabelled", "wall_1", "chair_2", "chair_3", "dining_table_4"]
    total = 0
    for node in children:
        (primitive,) = doc["meshes"][node["mesh"]]["primitives"]
        assert primitive["mode"] == 0
        position_acc = doc["accessors"][primitive["attributes"]["POSITION"]]
        positions = read_accessor(doc, binary, primitive["attributes"]["POSITION"])
        colors = read_accessor(doc, binary, primitive["attributes"]["COLOR_0"])
        assert doc["accessors"][primitive["attributes"]["COLOR_0"]]["normalized"] is True
        mask = points["segment"] == node["extras"]["segment"]
        np.testing.assert_array_equal(positions, points["xyz"][mask] * Y_UP)
        np.testing.assert_array_equal(colors[:, :3], points["rgb"][mask])
        assert (colors[:, 3] == 255).all()
        assert position_acc["min"] == positions.min(0).tolist() and position_acc["max"] == positions.max(0).tolist()
        total += len(positions)
    assert total == len(points["xyz"])


def test_glb_single_mesh(bundle: Bundle, tmp_path: Path) -> None:
    doc, binary = read_glb(export_glb(bundle, tmp_path / "scene.glb", per_segment=False))
    (mesh,) = doc["meshes"]
    attributes = mesh["primitives"][0]["attributes"]
    positions = read_accessor(doc, binary, attributes["POSITION"])
    np.testing.assert_array_equal(positions, bundle.points["xyz"] * Y_UP)
    np.testing.assert_array_equal(read_accessor(doc, binary, attributes["COLOR_0"])[:, :3], bundle.points["rgb"])


def test_glb_without_points_is_valid(tmp_path: Path) -> None:
    manifest, points, panoptic, photos = make_bundle_inputs()
    points = {name: arr[:0] for name, arr in points.items()}
    bundle = read_bundle(write_bundle(tmp_path / "job", manifest, points, panoptic, photos))
    doc, binary = read_glb(export_glb(bundle, tmp_path / "empty.glb"))
    assert binary == b"" and "meshes" not in doc and "buffers" not in doc
    assert export_instance_plys(bundle, tmp_path / "ply") == []


# ---------------------------------------------------------------- the README's snippet
def test_readme_export_snippet_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Exports\n", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    write_bundle(tmp_path / "out" / "room", *make_bundle_inputs())  # where `run` would have written it
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "room_ply").iterdir())[0] == "chair_2.ply"
    coco = json.loads((out / "room_coco" / "panoptic.json").read_text())
    assert min(c["id"] for c in coco["categories"]) == 1
    assert read_glb(out / "room.glb")[0]["asset"]["version"] == "2.0"
