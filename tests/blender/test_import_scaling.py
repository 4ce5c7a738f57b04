"""The import's batched passes: grouping points by segment, and objects that evaluate to their points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _reference_split(segment: np.ndarray):
    order = np.argsort(segment, kind="stable")
    ids, starts = np.unique(segment[order], return_index=True)
    return order, ids, np.append(starts, segment.size)


@pytest.mark.parametrize("high", [12, 10_001, 70_000])  # the last is past the 16-bit radix sort's keys
def test_split_by_segment_groups_in_a_stable_order(addon, high: int) -> None:
    points = addon.module("importers.points")
    segment = np.random.default_rng(high).integers(0, high, 50_000).astype(np.int32)
    order, ids, starts = points.split_by_segment(segment)
    expected = _reference_split(segment)
    for got, want in zip((order, ids, starts), expected):
        np.testing.assert_array_equal(got, want)
    assert starts.dtype == ids.dtype == np.int64 and starts[-1] == segment.size
    empty = points.split_by_segment(np.zeros(0, np.int32))
    assert [len(a) for a in empty] == [0, 0, 1]


def test_objects_evaluate_to_their_points(addon, scene, synthetic_bundle: Path) -> None:
    """Meshes are filled without ``mesh.update()``: the evaluated point clouds still hold every point, at the
    mesh's positions (a stale mesh would evaluate empty or at the wrong place)."""
    bpy = addon.bpy
    if not hasattr(bpy.types, "GeometrySet"):
        pytest.skip("bpy.types.GeometrySet (used to inspect evaluated geometry) needs Blender 4.3 or newer")
    assert bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle)) == {"FINISHED"}
    depsgraph = bpy.context.evaluated_depsgraph_get()
    instances = [ob for ob in bpy.data.objects if "segment" in ob]
    assert instances
    for ob in instances:
        xyz = np.empty(len(ob.data.vertices) * 3, np.float32)
        ob.data.attributes["position"].data.foreach_get("vector", xyz)
        xyz = xyz.reshape(-1, 3)
        geometry = bpy.types.GeometrySet.from_evaluated_object(ob.evaluated_get(depsgraph))  # owns the cloud
        cloud = geometry.pointcloud
        shown = np.empty(len(cloud.points) * 3, np.float32)
        cloud.attributes["position"].data.foreach_get("vector", shown)
        np.testing.assert_array_equal(shown.reshape(-1, 3), xyz)
        assert ob["point_count"] == len(xyz) and tuple(ob.color)[3] == 1.0


def test_cycle_collection_is_paused_only_during_the_import(addon, scene, synthetic_bundle: Path) -> None:
    """The garbage collector is off while objects are created and back on after (also after a failure)."""
    import gc

    bpy, scene_module = addon.bpy, addon.module("importers.scene")
    seen = []
    original = scene_module._point_objects

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        if len(seen) > 1:
            raise ValueError("a failure part-way")
        return original(*args, **kwargs)

    scene_module._point_objects = spy
    try:
        assert gc.isenabled()
        assert bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle)) == {"FINISHED"}
        assert seen == [False] and gc.isenabled()
        with pytest.raises(RuntimeError, match="a failure part-way"):
            bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle))
        assert seen == [False, False] and gc.isenabled()
    finally:
        scene_module._point_objects = original
