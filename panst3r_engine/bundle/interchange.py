"""A result bundle as a COLMAP text model or a nerfstudio dataset, for training splats or NeRFs elsewhere.

Standard library and ``numpy`` only: ``build.py`` copies this module byte for
byte into the Blender add-on (``blender_addon/bundle/_interchange.py``), so the
engine's ``export`` command and the add-on's Export menu write the very same
files. Each side fills :class:`ExportScene` from its own bundle reader (which
has already checked the bundle); the writers here trust those values.

Conventions (the bundle's are in ``spec.py``): ``K`` uses the continuous pixel
convention, pixel (col, row) centred at (col + 0.5, row + 0.5). COLMAP uses the
same one ("the center of the upper left pixel is (0.5, 0.5)", colmap.github.io,
Camera Models) and so does nerfstudio (rays through pixel centres, docs.nerf.studio,
Data conventions), so ``K`` is written unchanged and an observation of pixel
(col, row) is written at (col + 0.5, row + 0.5).

- COLMAP (colmap.github.io, Output Format): ``sparse/0/cameras.txt`` (PINHOLE,
  one camera per distinct intrinsics), ``images.txt`` (world-to-camera
  quaternion and translation, then each image's 2D observations),
  ``points3D.txt`` (xyz, colour, reprojection error, track), photos in ``images/``.
- nerfstudio (docs.nerf.studio, Data conventions): ``transforms.json`` with
  ``camera_model`` "OPENCV", intrinsics ``fl_x fl_y cx cy w h`` (top level when
  shared), ``frames[].file_path`` and ``transform_matrix`` (camera-to-world in
  OpenGL camera axes: x right, y up, z back), ``ply_file_path`` (initial points
  for splatfacto). Each frame's panoptic map is ``panoptic_path`` (not
  nerfstudio's ``mask_path``, which marks pixels to ignore) and the classes and
  segments its ids refer to are under the ``panst3r`` key.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = ("colmap", "nerfstudio")
COLMAP_MODEL_DIR = "sparse/0"
IMAGES_DIR = "images"
PANOPTIC_DIR = "panoptic"
TRANSFORMS = "transforms.json"
NERFSTUDIO_PLY = "points3D.ply"
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # camera axes: y down, z forward -> y up, z back
PANOPTIC_ENCODING = "segment id = R + 256 G + 65536 B (COCO panoptic); 0 = void"


class ExportError(Exception):
    """An export that cannot be written, with a sentence that says what to do."""


@dataclass(frozen=True)
class ExportView:
    """One bundle image, as the exporters need it."""

    index: int  # the bundle's image index (points' ``view``)
    stem: str  # a checked stem: file names are built from it
    width: int
    height: int
    K: np.ndarray  # [3, 3] processed-image pixels, continuous convention
    cam_to_world: np.ndarray  # [4, 4] OpenCV camera axes
    valid: bool  # False: the engine could not recover this camera
    photo: Path | None  # images/<stem>.jpg of the bundle, None when absent
    panoptic: Path | None  # panoptic/<stem>.png of the bundle, None when absent


@dataclass(frozen=True)
class ExportClass:
    id: int
    name: str
    color: tuple[int, int, int]
    isthing: bool


@dataclass
class ExportScene:
    """What a bundle holds for the exporters: views, classes, segments and the point arrays."""

    views: list[ExportView]
    classes: list[ExportClass]
    segment_classes: dict[int, int]  # segment id -> class id
    points: dict[str, np.ndarray] = field(repr=False)  # the bundle's xyz, rgb, segment, view, pixel (N rows)


@dataclass
class ExportResult:
    path: Path
    format: str
    views: int
    points: int
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- shared geometry
def usable_views(scene: ExportScene) -> tuple[list[ExportView], list[str]]:
    """The views with a recovered camera and a photo, and one warning per view left out."""
    kept, warnings = [], []
    for view in scene.views:
        if not view.valid:
            warnings.append(f"image {view.stem!r} is left out: the engine could not recover its camera")
        elif view.photo is None:
            warnings.append(f"image {view.stem!r} is left out: the bundle lacks its photo")
        else:
            kept.append(view)
    if not kept:
        raise ExportError(
            "no image of the bundle has both a recovered camera and its photo, so there is nothing to "
            "train on; run the job again with more overlapping photos"
        )
    return kept, warnings


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> unit quaternion (w, x, y, z) with w >= 0 (Hamilton, COLMAP's order).

    The eigenvector of the symmetric 4x4 matrix of Bar-Itzhack (2000), "New method for extracting the
    quaternion from a rotation matrix": stable for every angle, and it tolerates a slightly non-orthogonal input.
    """
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = np.asarray(rotation, dtype=np.float64)
    k = np.array(
        [
            [xx - yy - zz, yx + xy, zx + xz, zy - yz],
            [yx + xy, yy - xx - zz, zy + yz, xz - zx],
            [zx + xz, zy + yz, zz - xx - yy, yx - xy],
            [zy - yz, xz - zx, yx - xy, xx + yy + zz],
        ]
    )
    _, vectors = np.linalg.eigh(k / 3.0)
    x, y, z, w = vectors[:, -1]
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def world_to_camera(cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R [3, 3], t [3]) with x_cam = R x_world + t, from a camera-to-world matrix."""
    rotation = np.asarray(cam_to_world, dtype=np.float64)[:3, :3].T
    return rotation, -rotation @ np.asarray(cam_to_world, dtype=np.float64)[:3, 3]


def project(view: ExportView, xyz: np.ndarray) -> np.ndarray:
    """[N, 3] world points -> [N, 2] continuous pixel coordinates in ``view`` (pinhole, no distortion)."""
    rotation, translation = world_to_camera(view.cam_to_world)
    cam = xyz.astype(np.float64) @ rotation.T + translation
    uvw = cam @ np.asarray(view.K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / uvw[:, 2:3]


def _intrinsics(view: ExportView) -> tuple[float, float, float, float]:
    K = np.asarray(view.K, dtype=np.float64)
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])


# ---------------------------------------------------------------- COLMAP
def _observations(scene: ExportScene, views: list[ExportView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: the COLMAP image id of its view (0 when that view is not exported), its index among that
    image's 2D points, and its reprojection error in pixels (-1 without an observation)."""
    points = scene.points
    n = len(points["xyz"])
    image_of_view = np.zeros(max([v.index for v in scene.views], default=0) + 1, dtype=np.int64)
    for image_id, view in enumerate(views, start=1):
        image_of_view[view.index] = image_id
    image_id = image_of_view[points["view"].astype(np.int64)] if n else np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), image_id))  # points grouped by image, in bundle order within each
    sorted_ids = image_id[order]
    starts = np.searchsorted(sorted_ids, sorted_ids, side="left")
    point2d = np.empty(n, dtype=np.int64)
    point2d[order] = np.arange(n) - starts
    error = np.full(n, -1.0)
    for k, view in enumerate(views, start=1):
        mask = image_id == k
        observed = points["pixel"][mask].astype(np.float64) + 0.5
        error[mask] = np.linalg.norm(project(view, points["xyz"][mask]) - observed, axis=1)
    error[~np.isfinite(error)] = -1.0
    return image_id, point2d, error


def _colmap_cameras(views: list[ExportView]) -> tuple[str, list[int]]:
    """cameras.txt and each view's camera id: one PINHOLE camera per distinct (size, intrinsics)."""
    ids: dict[tuple, int] = {}
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    camera_of_view = []
    for view in views:
        key = (view.width, view.height, *_intrinsics(view))
        if key not in ids:
            ids[key] = len(ids) + 1
            lines.append(f"{ids[key]} PINHOLE {view.width} {view.height} " + " ".join(map(repr, key[2:])))
        camera_of_view.append(ids[key])
    lines.insert(2, f"# Number of cameras: {len(ids)}")
    return "\n".join(lines) + "\n", camera_of_view


def _write_rows(fh, fmt: str, columns: list[np.ndarray], sep: str = "", chunk: int = 1 << 16) -> None:
    """``fmt % row`` for the rows of ``columns``, joined by ``sep``, written a chunk at a time (bounded memory)."""
    n = len(columns[0])
    for start in range(0, n, chunk):
        rows = zip(*(column[start : start + chunk].tolist() for column in columns))
        fh.write(("" if start == 0 else sep) + sep.join([fmt % row for row in rows]))


def _write_colmap_images(fh, scene: ExportScene, views: list[ExportView], camera_of_view: list[int], image_id) -> None:
    """images.txt: per image its pose line, then its 2D points (X Y POINT3D_ID), in point2D index order."""
    pixel = scene.points["pixel"]
    fh.write(
        "# Image list with two lines of data per image:\n"
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
        "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
        f"# Number of images: {len(views)}\n"
    )
    for k, (view, camera_id) in enumerate(zip(views, camera_of_view), start=1):
        rotation, translation = world_to_camera(view.cam_to_world)
        pose = " ".join(map(repr, [*rotation_to_quaternion(rotation).tolist(), *translation.tolist()]))
        fh.write(f"{k} {pose} {camera_id} {view.stem}.jpg\n")
        rows = np.flatnonzero(image_id == k)
        _write_rows(fh, "%d.5 %d.5 %d", [pixel[rows, 0], pixel[rows, 1], rows + 1], sep=" ")
        fh.write("\n")


def _write_colmap_points(fh, scene: ExportScene, image_id: np.ndarray, point2d: np.ndarray, error: np.ndarray) -> None:
    """points3D.txt: POINT3D_ID (bundle row + 1), X Y Z, R G B, ERROR, TRACK[] (one observation, or none)."""
    xyz, rgb = scene.points["xyz"], scene.points["rgb"]
    tracked = image_id > 0
    fh.write(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
        f"# Number of points: {len(xyz)}, mean track length: {float(tracked.mean()) if len(xyz) else 0.0}\n"
    )
    point = "%d %.9g %.9g %.9g %d %d %d %.6g"  # 9 digits: float32 coordinates read back exactly
    for rows, fmt, track in (
        (np.flatnonzero(tracked), point + " %d %d\n", True),
        (np.flatnonzero(~tracked), point + "\n", False),
    ):
        columns = [rows + 1, *xyz[rows].T, *rgb[rows].T, error[rows]]
        _write_rows(fh, fmt, columns + ([image_id[rows], point2d[rows]] if track else []))


def write_colmap(scene: ExportScene, folder: str | os.PathLike) -> ExportResult:
    """A COLMAP text model in ``folder/sparse/0`` and the photos in ``folder/images``.

    Every bundle point is a 3D point whose track is its one observation: the pixel of the view it came from
    (no track when that view is left out). COLMAP tools read the folder as a sparse model of undistorted
    PINHOLE images, e.g. ``colmap model_converter``, Gaussian-splatting trainers, ``ns-train ... colmap``.
    """
    folder = Path(folder)
    views, warnings = usable_views(scene)
    cameras, camera_of_view = _colmap_cameras(views)
    image_id, point2d, error = _observations(scene, views)
    model = folder / COLMAP_MODEL_DIR
    model.mkdir(parents=True, exist_ok=True)
    (model / "cameras.txt").write_text(cameras, encoding="utf-8")
    with open(model / "images.txt", "w", encoding="utf-8") as fh:
        _write_colmap_images(fh, scene, views, camera_of_view, image_id)
    with open(model / "points3D.txt", "w", encoding="utf-8") as fh:
        _write_colmap_points(fh, scene, image_id, point2d, error)
    _copy_files(views, folder, panoptic=False)
    return ExportResult(folder, "colmap", len(views), len(scene.points["xyz"]), warnings)


# ---------------------------------------------------------------- nerfstudio
def opengl_cam_to_world(cam_to_world: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenCV camera axes -> with OpenGL/Blender camera axes (nerfstudio's)."""
    return np.asarray(cam_to_world, dtype=np.float64) @ OPENCV_TO_OPENGL


def _frame(view: ExportView, shared: bool) -> dict:
    frame: dict = {
        "file_path": f"{IMAGES_DIR}/{view.stem}.jpg",
        "transform_matrix": opengl_cam_to_world(view.cam_to_world).tolist(),
    }
    if not shared:
        fx, fy, cx, cy = _intrinsics(view)
        frame.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, w=view.width, h=view.height)
    if view.panoptic is not None:
        frame["panoptic_path"] = f"{PANOPTIC_DIR}/{view.stem}.png"
    return frame


def transforms_document(scene: ExportScene, views: list[ExportView]) -> dict:
    """The transforms.json content for ``views``; intrinsics at the top level when every view shares them."""
    shared = len({(v.width, v.height, *_intrinsics(v)) for v in views}) == 1
    doc: dict = {"camera_model": "OPENCV"}
    if shared:
        fx, fy, cx, cy = _intrinsics(views[0])
        doc.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, w=views[0].width, h=views[0].height)
    doc.update(k1=0.0, k2=0.0, p1=0.0, p2=0.0)  # the bundle's photos are undistorted pinhole images
    doc["frames"] = [_frame(view, shared) for view in views]
    doc["ply_file_path"] = NERFSTUDIO_PLY
    doc["panst3r"] = {
        "panoptic_encoding": PANOPTIC_ENCODING,
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "isthing": c.isthing} for c in scene.classes],
        "segments": [{"id": s, "class_id": c} for s, c in sorted(scene.segment_classes.items())],
    }
    return doc


def write_points_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float x, y, z and uchar red, green, blue (what splatfacto's loader reads)."""
    vertices = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "u1", (3,))])
    vertices["x"], vertices["y"], vertices["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertices["rgb"] = rgb
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vertices.tobytes())


def write_nerfstudio(scene: ExportScene, folder: str | os.PathLike) -> ExportResult:
    """``transforms.json``, ``images/``, ``panoptic/`` and ``points3D.ply`` in ``folder``: ``ns-train splatfacto
    --data folder`` trains on it, starting from the bundle's points."""
    folder = Path(folder)
    views, warnings = usable_views(scene)
    folder.mkdir(parents=True, exist_ok=True)
    _copy_files(views, folder, panoptic=True)
    write_points_ply(folder / NERFSTUDIO_PLY, scene.points["xyz"], scene.points["rgb"])
    text = json.dumps(transforms_document(scene, views), indent=1, allow_nan=False)
    (folder / TRANSFORMS).write_text(text, encoding="utf-8")
    return ExportResult(folder, "nerfstudio", len(views), len(scene.points["xyz"]), warnings)


def _copy_files(views: list[ExportView], folder: Path, panoptic: bool) -> None:
    """The photos (and panoptic maps) of ``views``, named after their checked stems."""
    (folder / IMAGES_DIR).mkdir(exist_ok=True)
    for view in views:
        shutil.copyfile(view.photo, folder / IMAGES_DIR / f"{view.stem}.jpg")
        if panoptic and view.panoptic is not None:
            (folder / PANOPTIC_DIR).mkdir(exist_ok=True)
            shutil.copyfile(view.panoptic, folder / PANOPTIC_DIR / f"{view.stem}.png")


WRITERS = {"colmap": write_colmap, "nerfstudio": write_nerfstudio}


# ---------------------------------------------------------------- writing into the output folder
def staging_folder(out_dir: Path) -> Path:
    """A hidden, new sibling of ``out_dir`` (same file system, so publishing is a rename)."""
    return out_dir.with_name(f".{out_dir.name}.export-{os.getpid()}-{secrets.token_hex(6)}")


def check_destination(out_dir: str | os.PathLike, overwrite: bool, how_to_overwrite: str) -> None:
    """Refuse, before anything is written, an output that is not a folder, or a non-empty one without overwrite."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ExportError(f"{out_dir} exists and is not a folder; choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(
            f"{out_dir} is not empty; choose a new or empty folder, or {how_to_overwrite} to replace the files "
            "the export writes there (other files are kept)"
        )


def _staged_files(staging: Path) -> list[Path]:
    return sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())


def _check_merge(staging: Path, out_dir: Path) -> list[Path]:
    """The staged files, after checking each can replace its counterpart in ``out_dir`` without a link or a
    folder in the way (so a merge never writes outside ``out_dir`` nor removes a folder)."""
    files = _staged_files(staging)
    for relative in files:
        path = out_dir
        for i, part in enumerate(relative.parts):
            path = path / part
            last = i == len(relative.parts) - 1
            if path.is_symlink() or (path.exists() and (path.is_dir() if last else not path.is_dir())):
                raise ExportError(
                    f"{path} is in the way of the export (a link, or a {'folder' if last else 'file'}); "
                    "move it away or choose another output folder"
                )
    return files


def publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a finished export into place: one rename into a new (or empty) folder; with ``overwrite`` into a
    non-empty one, each written file replaces its namesake (one rename each) and other files stay."""
    empty = out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir())
    if empty and out_dir.resolve() != Path.cwd().resolve():  # the working folder would vanish: merge into it
        out_dir.rmdir()
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    if not (overwrite or empty):
        raise ExportError(f"{out_dir} changed while the export was written; choose another output folder")
    for relative in _check_merge(staging, out_dir):  # every file checked before the first one moves
        (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, out_dir / relative)


def write_export(
    write, out_dir: str | os.PathLike, overwrite: bool = False, how_to_overwrite: str = "pass --overwrite"
) -> ExportResult:
    """Run ``write(folder) -> ExportResult`` in a staging folder, then publish it to ``out_dir`` atomically.

    Nothing is left behind on failure: the staging folder is removed, and ``out_dir`` gains files only when
    the whole export was written.
    """
    out_dir = Path(os.path.abspath(out_dir))  # "." and "dir/" get a name for the staging sibling
    if not out_dir.name:
        raise ExportError(f"cannot export into {out_dir}, the root of a drive; choose or create a folder in it")
    check_destination(out_dir, overwrite, how_to_overwrite)
    staging = staging_folder(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        result = write(staging)
        publish(staging, out_dir, overwrite)
    except OSError as exc:
        raise ExportError(
            f"could not write the export to {out_dir} ({exc.strerror or exc}); check that the folder is "
            "writable and the disk has space"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.path = out_dir
    return result


def export_scene(
    scene: ExportScene, fmt: str, out_dir: str | os.PathLike, overwrite: bool = False, **kwargs
) -> ExportResult:
    """Write ``scene`` as ``fmt`` (one of :data:`FORMATS`) into ``out_dir`` atomically."""
    if fmt not in WRITERS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return write_export(lambda folder: WRITERS[fmt](scene, folder), out_dir, overwrite, **kwargs)
