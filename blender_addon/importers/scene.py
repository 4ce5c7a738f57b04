"""Bundle data -> Blender scene, as a list of named passes (the import operator's one entry point).

Passes: ``transform`` (the world conversion, levelled on floor points) ->
``split`` (points grouped by segment, converted in one batch) -> ``collections``
-> ``materials`` (one per class) -> ``points`` (one object per segment, plus
``unlabelled``) -> ``layout`` (the optional box empties of :mod:`.layout`)
-> ``cameras`` -> ``splats`` (the optional splats.ply, excluded) -> ``scene`` (scene
camera, render resolution, metadata) -> ``meshes`` (optional: one surface per labelled instance).
Everything is created inside the calling operator's ``execute``, so an import is one undo step, and an
import that fails part-way removes what it created (``cleanup``).
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import bpy
import numpy as np

from ..bundle.read import BundleData
from . import RESULT_PROPERTY, cameras, cleanup, convert, layout, materials, points, splats

UNLABELLED = "unlabelled"
UNLABELLED_COLOR = (150, 150, 150)
MAX_FLOOR_SAMPLES = 50_000


@dataclass
class ImportOptions:
    scale: float = 1.0  # multiplies every distance
    level_floor: bool = True  # level the scene on floor/rug/carpet points when there are enough
    point_size: float = 0.01  # point radius in scene units
    min_conf: float = 0.0  # hide points below this confidence (a modifier input, editable later)
    cameras: bool = True
    splats: bool = True  # the bundle's splats.ply as a (hidden) "Splats" collection, when present
    set_scene_camera: bool = True  # scene camera and render resolution from the reference photo
    layout_proxies: bool = False  # a "Layout" collection of oriented box empties, one per instance
    meshes: bool = False  # also a mesh per labelled instance, in a "Meshes" collection (importers/meshes.py)
    mesh_detail: float = 1.0
    texture_size: int = 0  # bake the meshes' colours into textures of this size (0: no; importers/bake.py)


@dataclass
class ImportResult:
    collection: bpy.types.Collection
    objects: list = field(default_factory=list)
    cameras: list = field(default_factory=list)
    splats: object = None
    proxies: list = field(default_factory=list)
    meshes: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _transform(data: BundleData, options: ImportOptions, result: ImportResult) -> convert.WorldTransform:
    floor_xyz = None
    if options.level_floor:
        floor_classes = {c.id for c in data.classes.values() if c.name.strip().lower() in convert.FLOOR_CLASSES}
        floor_segments = [s.id for s in data.segments if s.class_id in floor_classes]
        if floor_segments:
            floor_xyz = data.points["xyz"][np.isin(data.points["segment"], floor_segments)]
            floor_xyz = floor_xyz[:: max(1, len(floor_xyz) // MAX_FLOOR_SAMPLES)]  # a plane needs few points
    reference = data.cameras[data.reference_image].cam_to_world
    transform, warning = convert.world_transform(reference, floor_xyz, options.scale)
    if warning:
        result.warnings.append(warning)
    return transform


def _collections(context, data: BundleData, class_ids: list[int]) -> tuple:
    root = bpy.data.collections.new(f"PanSt3R {data.name}")
    context.scene.collection.children.link(root)
    per_class = {}
    for class_id in class_ids:
        name = data.classes[class_id].name if class_id >= 0 else UNLABELLED
        child = bpy.data.collections.new(name)
        child["class"] = name
        root.children.link(child)
        per_class[class_id] = child
    return root, per_class


def _point_objects(
    data: BundleData,
    sorted_points: dict,
    ids: np.ndarray,
    starts: np.ndarray,
    collections: dict,
    mats: dict,
    options: ImportOptions,
    result: ImportResult,
) -> None:
    """One object per segment with points (plus ``unlabelled``), named ``<class>.<n>`` (n zero-padded to the
    largest count, so names sort in creation order)."""
    segments = {s.id: s for s in data.segments}
    found = [segments.get(i) for i in ids.tolist()]
    class_of = [seg.class_id if seg is not None else -1 for seg in found]
    found = [seg if class_id >= 0 else None for seg, class_id in zip(found, class_of)]
    width = max([3] + [len(str(n)) for n in np.unique(class_of, return_counts=True)[1].tolist()])
    colors = convert.linear_rgba([seg.color if seg is not None else UNLABELLED_COLOR for seg in found]).tolist()
    arrays = [sorted_points[key] for key in ("xyz", "rgba", "conf", "segment", "class")]
    bounds = starts.tolist()
    class_names = [data.classes[c].name if c >= 0 else UNLABELLED for c in class_of]
    counters: dict[int, int] = {}
    items = []
    for k, class_id in enumerate(class_of):
        name = UNLABELLED
        if class_id >= 0:
            counters[class_id] = counters.get(class_id, 0) + 1
            name = f"{class_names[k]}.{counters[class_id]:0{width}d}"
        point_set = points.PointSet(*(array[bounds[k] : bounds[k + 1]] for array in arrays))
        items.append(points.PointObject(name, point_set, collections[class_id], mats[class_id]))
    objects = points.create_objects(items, options.point_size, options.min_conf)
    labels = zip(ids.tolist(), found, class_of, class_names, colors, np.diff(starts).tolist())
    for ob, (seg_id, seg, class_id, class_name, color, count) in zip(objects, labels):
        ob.color = color
        ob["segment"], ob["class"], ob["class_id"] = seg_id, class_name, class_id
        ob["score"] = seg.score if seg is not None else 0.0
        ob["point_count"] = count
    result.objects.extend(objects)
    imported = set(ids.tolist())
    empty = [s.id for s in data.segments if s.id not in imported]
    if empty:
        result.warnings.append(
            f"{len(empty)} segment(s) have no points above the confidence threshold "
            f"and were not imported (ids {empty[:5]})"
        )


def _camera_objects(
    context,
    data: BundleData,
    transform: convert.WorldTransform,
    root: bpy.types.Collection,
    xyz: np.ndarray,
    options: ImportOptions,
    result: ImportResult,
) -> None:
    collection = bpy.data.collections.new("Cameras")
    root.children.link(collection)
    sample = xyz[:: max(1, len(xyz) // 20000)]
    extent = float(np.max(np.percentile(sample, 95, axis=0) - np.percentile(sample, 5, axis=0))) if len(sample) else 1.0
    size = max(0.01, 0.05 * extent)
    for cam in data.cameras:
        result.cameras.append(cameras.create_camera(cam, transform, collection, size))
    if options.set_scene_camera and result.cameras:
        cameras.use_camera(context.scene, result.cameras[data.reference_image])


def _splat_object(
    context, data: BundleData, transform: convert.WorldTransform, root: bpy.types.Collection, result: ImportResult
) -> None:
    result.splats = splats.create_splat_layer(context, data, transform, root)


def _mesh_objects(context, detail: float, texture_size: int, result: ImportResult) -> None:
    from . import bake, meshes

    labelled = [ob for ob in result.objects if ob["segment"] != 0]  # unlabelled points are scattered, no surface
    if texture_size:
        bake.check_budget(len(labelled), texture_size)  # a ValueError: the import is undone with the sentence
    for ob in labelled:
        try:
            result.meshes.append(meshes.make_mesh(context, ob, detail, texture_size))
        except meshes.MeshError as exc:
            result.warnings.append(f"no mesh for {ob.name}: {exc}")


def _store_metadata(root: bpy.types.Collection, data: BundleData, transform: convert.WorldTransform) -> None:
    root[RESULT_PROPERTY] = 1
    root["bundle"] = str(data.path)
    root["format_version"] = data.format_version
    root["model"] = str(data.manifest.get("model", {}).get("id", ""))
    root["world_matrix"] = transform.matrix().ravel().tolist()  # engine world -> Blender, row-major
    root["scale"] = transform.scale


@contextmanager
def _no_cycle_collection():
    """Pause Python's cyclic garbage collector: tens of thousands of short-lived bpy wrappers would otherwise
    trigger full collections that walk every live Python object (a few percent of a 10,000-object import)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def import_bundle(context, data: BundleData, options: ImportOptions) -> ImportResult:
    """Create the result collection, point objects, materials and cameras of one bundle; on any error,
    nothing this import created is left behind."""
    with cleanup.removed_on_error(), _no_cycle_collection():
        return _import(context, data, options)


def _import(context, data: BundleData, options: ImportOptions) -> ImportResult:
    clock = time.perf_counter()
    result = ImportResult(collection=None)

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.timings[name] = now - clock
        clock = now

    if data.dropped_points:
        result.warnings.append(
            f"{data.dropped_points} point(s) with a NaN or infinite position or confidence were left out"
        )
    transform = _transform(data, options, result)
    lap("transform")
    order, ids, starts = points.split_by_segment(data.points["segment"])
    class_of = {s.id: s.class_id for s in data.segments}
    point_class = np.array([class_of.get(i, -1) for i in ids.tolist()], np.int32)
    counts = np.diff(starts)
    sorted_points = {
        "xyz": transform.points(data.points["xyz"][order]),
        "rgba": convert.linear_rgba(data.points["rgb"][order]),
        "conf": np.ascontiguousarray(data.points["conf"][order], dtype=np.float32),
        "segment": np.repeat(ids.astype(np.int32), counts),  # the sorted segment ids, without a gather
        "class": np.repeat(point_class, counts),
    }
    lap("split")
    class_ids = sorted({class_of.get(i, -1) for i in ids.tolist()}, key=lambda c: (c < 0, c))
    result.collection, collections = _collections(context, data, class_ids)
    lap("collections")
    mats = {
        c: materials.class_material(data.classes[c].name, data.classes[c].color)
        if c >= 0
        else materials.class_material(UNLABELLED, UNLABELLED_COLOR)
        for c in class_ids
    }
    lap("materials")
    _point_objects(data, sorted_points, ids, starts, collections, mats, options, result)
    lap("points")
    if options.layout_proxies:
        segments, root = sorted_points["segment"], result.collection
        result.proxies = layout.create_proxies(data, sorted_points["xyz"], segments, root, transform.matrix())
    lap("layout")
    if options.cameras:
        _camera_objects(context, data, transform, result.collection, sorted_points["xyz"], options, result)
    lap("cameras")
    if options.splats:
        _splat_object(context, data, transform, result.collection, result)
    lap("splats")
    _store_metadata(result.collection, data, transform)
    lap("scene")
    if options.meshes:
        _mesh_objects(context, options.mesh_detail, options.texture_size, result)
    lap("meshes")
    return result
