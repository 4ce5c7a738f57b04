"""Exports of a result bundle to formats other tools read.

* one binary PLY per segment (MeshLab, CloudCompare, Blender's PLY importer);
* COCO panoptic (``panoptic.json`` + PNGs, as panopticapi and detectron2 expect);
* a glTF 2.0 binary (``.glb``) point cloud, one node per segment.

All three are written with numpy, struct and json only. The PLYs keep the
bundle's OpenCV world axes (x right, y down, z forward) unless ``y_up`` is
asked for; the GLB is always converted to glTF's Y-up frame: (x, -y, -z).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from panst3r_engine import __version__
from panst3r_engine.bundle.read import Bundle

OPENCV_TO_Y_UP = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # x, -y, -z: OpenCV camera axes -> glTF axes
UNLABELLED = "unlabelled"

PLY_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("class", "<i4"),
        ("segment", "<i4"),
    ]
)
_PLY_TYPES = {"<f4": "float", "u1": "uchar", "<i4": "int"}

GLB_MAGIC, GLB_VERSION = 0x46546C67, 2  # b"glTF"
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942  # b"JSON", b"BIN\0"
ARRAY_BUFFER, FLOAT, UNSIGNED_BYTE, POINTS_MODE = 34962, 5126, 5121, 0


# ---------------------------------------------------------------- shared helpers
def safe_name(text: str) -> str:
    """A file-name-safe version of a class name ('dining table' -> 'dining_table')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"


def segment_label(bundle: Bundle, segment_id: int) -> str:
    """'<class>_<segment id>' for a segment, 'unlabelled' for id 0."""
    if segment_id == 0:
        return UNLABELLED
    class_id = bundle.segments_by_id[segment_id]["class_id"]
    return f"{safe_name(bundle.classes_by_id[class_id]['name'])}_{segment_id}"


def group_points(segment: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Sort points by segment id.

    Args:
        segment: int32 [N] segment ids.
    Returns:
        order: int64 [N], the permutation sorting the points by segment;
        groups: (segment id, start, count) in the sorted order, ascending ids.
    """
    order = np.argsort(segment, kind="stable")
    ids, starts, counts = np.unique(segment[order], return_index=True, return_counts=True)
    return order, list(zip(ids.tolist(), starts.tolist(), counts.tolist()))


# ---------------------------------------------------------------- PLY
def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, class_id: np.ndarray, segment: np.ndarray) -> Path:
    """Binary little-endian PLY: float x,y,z; uchar red,green,blue; int class; int segment.

    Args:
        xyz: [N, 3] coordinates; rgb: uint8 [N, 3]; class_id, segment: int [N].
    """
    vertices = np.empty(len(xyz), dtype=PLY_DTYPE)
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, channel]
    vertices["class"], vertices["segment"] = class_id, segment
    properties = "".join(
        f"property {_PLY_TYPES[PLY_DTYPE[name].str.replace('|', '')]} {name}\n" for name in PLY_DTYPE.names
    )
    header = (
        f"ply\nformat binary_little_endian 1.0\ncomment panst3r_engine {__version__}\n"
        f"element vertex {len(vertices)}\n{properties}end_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vertices.tobytes())
    return path


def export_instance_plys(bundle: Bundle, out_dir: str | os.PathLike, y_up: bool = False) -> list[Path]:
    """One PLY per segment with points (``<class>_<segment id>.ply``), plus ``unlabelled.ply`` if any.

    Args:
        y_up: convert to a Y-up frame (x, -y, -z) instead of keeping the bundle's OpenCV axes.
    Returns:
        The written paths, segments in ascending id order, ``unlabelled.ply`` last.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = bundle.points
    xyz = points["xyz"] * OPENCV_TO_Y_UP if y_up else points["xyz"]
    class_of = {s["id"]: s["class_id"] for s in bundle.manifest["segments"]}
    order, groups = group_points(points["segment"])
    paths = []
    for segment_id, start, count in sorted(groups, key=lambda g: (g[0] == 0, g[0])):
        idx = order[start : start + count]
        class_id = np.full(count, class_of.get(segment_id, -1), dtype=np.int32)
        path = out_dir / f"{segment_label(bundle, segment_id)}.ply"
        paths.append(write_ply(path, xyz[idx], points["rgb"][idx], class_id, points["segment"][idx]))
    return paths


# ---------------------------------------------------------------- COCO panoptic
COCO_CATEGORY_OFFSET = 1  # COCO category ids start at 1 (0 is no category): class id c is category c + 1


def _coco_categories(bundle: Bundle) -> list[dict]:
    return [
        {
            "id": c["id"] + COCO_CATEGORY_OFFSET,
            "name": c["name"],
            "supercategory": "thing" if c["isthing"] else "stuff",
            "isthing": int(c["isthing"]),
            "color": list(c["color"]),
        }
        for c in bundle.manifest["classes"]
    ]


def export_coco_panoptic(bundle: Bundle, out_dir: str | os.PathLike) -> Path:
    """COCO panoptic: ``panoptic/<stem>.png``, ``images/<stem>.jpg`` (when the bundle has the photo), ``panoptic.json``.

    Image ids are the bundle's image indices; category ids are its class ids + 1 (COCO's start at 1);
    segment ids (the PNG ids) are its segment ids.
    Returns:
        The path of ``panoptic.json``.
    """
    out_dir = Path(out_dir)
    (out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for entry in bundle.manifest["images"]:
        stem, (width, height) = entry["stem"], entry["processed_size"]
        images.append({"id": entry["index"], "file_name": f"{stem}.jpg", "width": width, "height": height})
        if bundle.has_image(stem):
            (out_dir / "images").mkdir(exist_ok=True)
            shutil.copyfile(bundle.path / "images" / f"{stem}.jpg", out_dir / "images" / f"{stem}.jpg")
        panoptic = bundle.manifest["panoptic"].get(stem)
        if panoptic is None:
            continue
        shutil.copyfile(bundle.path / panoptic["file"], out_dir / "panoptic" / f"{stem}.png")
        annotations.append(
            {
                "image_id": entry["index"],
                "file_name": f"{stem}.png",
                "segments_info": [
                    {**info, "category_id": info["category_id"] + COCO_CATEGORY_OFFSET}
                    for info in panoptic["segments_info"]
                ],
            }
        )
    coco = {
        "info": {
            "description": f"PanSt3R result exported by panst3r_engine {__version__}",
            "date_created": bundle.manifest.get("created", ""),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _coco_categories(bundle),
    }
    path = out_dir / "panoptic.json"
    path.write_text(json.dumps(coco, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------- glTF binary
def _gltf_document(bundle: Bundle, groups: list[tuple[int, int, int]], positions: np.ndarray) -> dict:
    """The glTF JSON for point groups laid out contiguously (positions then RGBA colours in one buffer)."""
    n = len(positions)
    doc: dict = {
        "asset": {"version": "2.0", "generator": f"panst3r_engine {__version__}"},
        "scene": 0,
        "scenes": [{"name": "PanSt3R", "nodes": [0]}],
        "nodes": [{"name": "panst3r_points", "children": list(range(1, len(groups) + 1))}],
    }
    if n == 0:
        del doc["nodes"][0]["children"]
        return doc
    doc["buffers"] = [{"byteLength": 16 * n}]
    doc["bufferViews"] = [
        {"buffer": 0, "byteOffset": 0, "byteLength": 12 * n, "byteStride": 12, "target": ARRAY_BUFFER},
        {"buffer": 0, "byteOffset": 12 * n, "byteLength": 4 * n, "byteStride": 4, "target": ARRAY_BUFFER},
    ]
    doc["accessors"], doc["meshes"] = [], []
    segments = bundle.segments_by_id
    for k, (segment_id, start, count) in enumerate(groups):
        block = positions[start : start + count]
        doc["accessors"] += [
            {
                "bufferView": 0,
                "byteOffset": 12 * start,
                "componentType": FLOAT,
                "count": count,
                "type": "VEC3",
                "min": block.min(axis=0).tolist(),
                "max": block.max(axis=0).tolist(),
            },
            {
                "bufferView": 1,
                "byteOffset": 4 * start,
                "componentType": UNSIGNED_BYTE,
                "normalized": True,
                "count": count,
                "type": "VEC4",
            },
        ]
        label = segment_label(bundle, segment_id)
        doc["meshes"].append(
            {
                "name": label,
                "primitives": [{"attributes": {"POSITION": 2 * k, "COLOR_0": 2 * k + 1}, "mode": POINTS_MODE}],
            }
        )
        extras = {"segment": segment_id}
        if segment_id:
            extras.update(class_id=segments[segment_id]["class_id"], score=segments[segment_id]["score"])
        doc["nodes"].append({"name": label, "mesh": k, "extras": extras})
    return doc


def _glb_bytes(doc: dict, binary: bytes) -> bytes:
    """Header + JSON chunk (space-padded) + BIN chunk (zero-padded), each 4-byte aligned."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), CHUNK_JSON) + text
    if binary:
        binary += b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), CHUNK_BIN) + binary
    return struct.pack("<III", GLB_MAGIC, GLB_VERSION, 12 + len(chunks)) + chunks


def export_glb(bundle: Bundle, path: str | os.PathLike, per_segment: bool = True) -> Path:
    """A glTF 2.0 binary point cloud (mode POINTS, POSITION + normalised uint8 RGBA COLOR_0), Y-up.

    Args:
        per_segment: one node and mesh per segment, named '<class>_<id>' (plus 'unlabelled'), children of a
            'panst3r_points' root; otherwise one mesh with every point.
    """
    points = bundle.points
    n = len(points["xyz"])
    if per_segment:
        order, groups = group_points(points["segment"])
    else:
        order, groups = np.arange(n), ([(0, 0, n)] if n else [])
    positions = np.ascontiguousarray((points["xyz"] * OPENCV_TO_Y_UP)[order], dtype="<f4")
    rgba = np.concatenate([points["rgb"], np.full((n, 1), 255, np.uint8)], axis=1)[order]
    doc = _gltf_document(bundle, groups, positions)
    if not per_segment and n:
        doc["nodes"][1]["name"] = doc["meshes"][0]["name"] = "panst3r_points_all"
        del doc["nodes"][1]["extras"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_glb_bytes(doc, positions.tobytes() + np.ascontiguousarray(rgba).tobytes()))
    return path
