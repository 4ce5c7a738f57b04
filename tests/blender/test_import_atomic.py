"""The import operator on broken bundles leaves nothing behind, refuses impossible values with a sentence,
and scales to many segments (counts here; the timing is benchmarks/bench_import.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from blender_addon.bundle._spec import PLY_REQUIRED
from blender_addon.bundle.read import BundleError, read_bundle
from tests.blender.room import write_room_bundle

KINDS = ("objects", "meshes", "materials", "collections", "node_groups", "images", "cameras")


def _counts(bpy) -> dict[str, int]:
    return {kind: len(getattr(bpy.data, kind)) for kind in KINDS}


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _edit_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _refused(bpy, bundle: Path, match: str) -> None:
    """The operator fails with the sentence and leaves every kind of datablock as it was."""
    before = _counts(bpy)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.panst3r.import_bundle(directory=str(bundle))
    assert _counts(bpy) == before


def test_corrupt_splats_leave_nothing_behind(addon, scene, synthetic_bundle: Path, tmp_path: Path) -> None:
    bpy = addon.bpy
    bundle = _copy(synthetic_bundle, tmp_path)
    properties = "".join(f"property float {name}\n" for name in PLY_REQUIRED)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n{properties}end_header\n".encode()
    (bundle / "splats.ply").write_bytes(header + b"\0" * 40)
    _refused(bpy, bundle, r"Cannot import the result: .*splats.ply is truncated")
    # a second import into a file that already holds a result keeps that result intact
    assert bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle)) == {"FINISHED"}
    _refused(bpy, bundle, "is truncated")
    assert sum("segment" in ob for ob in bpy.data.objects) == 5


def test_failure_after_shared_groups_exist_keeps_them(addon, scene, synthetic_bundle: Path, tmp_path: Path) -> None:
    """Shared node groups and reused class materials from an earlier import are not removed on failure."""
    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle)) == {"FINISHED"}
    groups, materials = set(bpy.data.node_groups.keys()), set(bpy.data.materials.keys())
    bundle = _copy(synthetic_bundle, tmp_path)
    (bundle / "splats.ply").write_bytes(b"not a ply")
    _refused(bpy, bundle, "is not a PLY file")
    assert set(bpy.data.node_groups.keys()) == groups and set(bpy.data.materials.keys()) == materials


@pytest.mark.parametrize(
    "where, color, field",
    [
        ("classes", [300, -5, 1000], r"classes\[0\] 'color'"),
        ("classes", [255, 0], r"classes\[0\] 'color'"),
        ("classes", "red", r"classes\[0\] 'color'"),
        ("segments", [0.5, 0.5, 0.5], r"segments\[0\] 'color'"),
        ("segments", [True, 0, 0], r"segments\[0\] 'color'"),
    ],
)
def test_malformed_colours_are_a_sentence(
    addon, scene, synthetic_bundle: Path, tmp_path: Path, where: str, color, field: str
) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m[where][0].update(color=color))
    with pytest.raises(BundleError, match=field + " must be \\[r, g, b\\] with integers 0 to 255"):
        read_bundle(bundle)
    _refused(addon.bpy, bundle, field + " must be")


@pytest.mark.parametrize("focal", [0.0, -30.0])
def test_impossible_focal_is_refused(addon, scene, synthetic_bundle: Path, tmp_path: Path, focal: float) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)

    def zero_focal(manifest: dict) -> None:
        manifest["cameras"][1]["K"][0][0] = focal

    _edit_manifest(bundle, zero_focal)
    with pytest.raises(BundleError, match=r"cameras\[1\] K has focal lengths .* they must be positive"):
        read_bundle(bundle)
    _refused(addon.bpy, bundle, "they must be positive")


def test_pose_that_is_not_a_rotation_is_refused(synthetic_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(synthetic_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m["cameras"][0].update(cam_to_world=np.diag([0.0, 0, 0, 1]).tolist()))
    with pytest.raises(BundleError, match=r"cameras\[0\] cam_to_world is not a rotation and translation"):
        read_bundle(bundle)


def test_nan_floor_points_are_left_out_and_levelling_uses_the_rest(addon, scene, tmp_path: Path) -> None:
    bpy = addon.bpy
    bundle = write_room_bundle(tmp_path / "room", 20000)
    with np.load(bundle / "points.npz") as npz:
        points = {key: npz[key] for key in npz.files}
    floor = np.flatnonzero(points["segment"] == 1)
    points["xyz"][floor[::50], 1] = np.nan  # 2 % of the floor points
    points["xyz"][floor[1], 0] = np.inf
    points["conf"][floor[2]] = np.nan
    np.savez(bundle / "points.npz", **points)
    dropped = len(floor[::50]) + 2
    scene_module, read = addon.module("importers.scene"), addon.module("bundle.read")
    result = scene_module.import_bundle(bpy.context, read.read_bundle(bundle), scene_module.ImportOptions())
    assert any(f"{dropped} point(s) with a NaN or infinite" in w for w in result.warnings), result.warnings
    ob = next(ob for ob in result.objects if ob["class"] == "floor")
    xyz = np.empty(len(ob.data.vertices) * 3, np.float32)
    ob.data.attributes["position"].data.foreach_get("vector", xyz)
    z = xyz.reshape(-1, 3)[:, 2]
    assert len(z) == len(floor) - dropped and np.isfinite(z).all()
    assert abs(np.median(z)) < 0.01 and np.std(z) < 0.01  # levelled on the finite floor points


def test_many_segments_one_object_each(addon, scene, tmp_path: Path) -> None:
    """1,100 chairs and a few tables: one object and one mesh each, named in order with the class, one
    material per class (the counts that the linear-time creation must keep)."""
    from panst3r_engine.bundle.write import write_bundle
    from tests.blender.room import room_inputs

    manifest, arrays, panoptic, photos = room_inputs(8000)
    furniture = np.flatnonzero(arrays["segment"] >= 3)
    arrays["segment"][furniture] = 3 + np.arange(len(furniture)) % 1103
    manifest["segments"] = manifest["segments"][:2] + [
        {"id": s, "class_id": 3 if s % 400 == 0 else 2, "score": 0.5} for s in range(3, 1106)
    ]
    bundle = write_bundle(tmp_path / "many", manifest, arrays, panoptic, photos)
    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(bundle), cameras=False) == {"FINISHED"}
    instances = [ob for ob in bpy.data.objects if "segment" in ob]
    assert len(instances) == 1103 + 2 + 1  # segments with points, floor and wall, unlabelled
    assert len({ob.data.name for ob in instances}) == len(instances)
    chairs = sorted(ob.name for ob in instances if ob["class"] == "chair")
    assert len(chairs) == 1101 and chairs[0] == "chair.0001" and chairs[-1] == "chair.1101"  # tables: 400, 800
    by_segment = {ob["segment"]: ob for ob in instances}
    for seg in (3, 400, 1105):
        ob = by_segment[seg]
        assert ob["class"] == ("table" if seg % 400 == 0 else "chair")
        assert ob["point_count"] == len(ob.data.vertices) == int((arrays["segment"] == seg).sum())
        assert ob.material_slots[0].material.name == f"PanSt3R {ob['class']}"
    assert len({ob.material_slots[0].material.name for ob in instances}) == 5  # 4 classes + unlabelled


def test_imported_class_materials_are_distinct(addon, scene, room_bundle: Path) -> None:
    """The room's floor, wall, chair and table materials (the viewport and render colours) are >= 20
    CIEDE2000 apart, and apart from the grey of unlabelled points."""
    from panst3r_engine.vocab.colorspace import ciede2000, srgb_to_lab

    bpy = addon.bpy
    assert bpy.ops.panst3r.import_bundle(directory=str(room_bundle)) == {"FINISHED"}
    linear = np.array(
        [bpy.data.materials[f"PanSt3R {n}"].diffuse_color[:3] for n in ("floor", "wall", "chair", "table")]
    )
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 255
    lab = srgb_to_lab(srgb)
    dist = ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 20.0, dist
    assert ciede2000(lab, srgb_to_lab([150, 150, 150])).min() >= 15.0


@pytest.mark.parametrize("point_size, min_conf", [(0.01, 0.0), (0.03, 1.5)])
def test_modifier_inputs_match_the_options(addon, scene, synthetic_bundle: Path, point_size, min_conf) -> None:
    """Defaults are left to the group's defaults, other values are set: every object shows the options."""
    bpy, points, nodes = addon.bpy, addon.module("importers.points"), addon.module("importers.nodes")
    assert bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle), point_size=point_size, min_conf=min_conf) == {
        "FINISHED"
    }
    group = points.points_group()
    for ob in (ob for ob in bpy.data.objects if "segment" in ob):
        modifier = ob.modifiers[points.MODIFIER]
        assert modifier[nodes.input_identifier(group, points.RADIUS)] == pytest.approx(point_size)
        assert modifier[nodes.input_identifier(group, points.MIN_CONF)] == pytest.approx(min_conf)
