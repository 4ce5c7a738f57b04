"""The engine's bundle writer: validate, fill the derived fields, write into a folder, publish with one rename.

The contract is :mod:`.spec` (and the README's "Result bundle" section). The
writer fills ``format_version``, ``created``, ``engine``, colours, each
segment's ``point_count``/``views``/``bbox_*`` and the ``panoptic`` entries when
they are absent, validates everything with :mod:`.checks` before touching the
disk, and never leaves a partial bundle at the destination."""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from panst3r_engine import __version__
from panst3r_engine.bundle import checks
from panst3r_engine.bundle.checks import BundleError, panoptic_segments_info
from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.bundle.spec import (
    FORMAT_VERSION,
    IMAGES_DIR,
    MANIFEST,
    MAX_SEGMENT_ID,
    OPTIONAL_FILES,
    PANOPTIC_DIR,
    POINTS,
    RESERVED_NAMES,
    encode_panoptic,
    image_file,
    panoptic_file,
)
from panst3r_engine.vocab.colors import class_colors, instance_color

JPEG_QUALITY = 95


def make_stems(file_names: list[str]) -> list[str]:
    """File-name-safe stems, unique ignoring case, from photo file names ('IMG 1.JPG' -> 'IMG_1')."""
    stems, seen = [], set()
    for i, name in enumerate(file_names):
        base = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in Path(name.replace("\\", "/")).stem)
        base = base.strip(".-")[:120] or f"image_{i}"
        try:
            checks.check_stem(base, "stem")
        except BundleError:
            base = f"image_{i}_{base}"[:120].rstrip(".")
        stem, k = base, 1
        while stem.casefold() in seen:
            stem, k = f"{base}_{k}", k + 1
        seen.add(stem.casefold())
        stems.append(stem)
    return stems


# ---------------------------------------------------------------- preparing a bundle
def _jsonable(obj: Any) -> Any:
    """A deep copy of obj with numpy values and paths turned into plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _check_maps(panoptic: Any, stems: list[str], sizes: np.ndarray, segment_ids: set[int]) -> dict[str, np.ndarray]:
    """Panoptic id maps: known stems, processed size, integer ids that are 0 or known segments."""
    if not isinstance(panoptic, Mapping):
        raise BundleError("panoptic must be a dict of image stem -> int32 [H, W] id map")
    out = {}
    for stem, ids in panoptic.items():
        if stem not in stems:
            raise BundleError(f"a panoptic map is given for {stem!r}, which is not an image stem")
        ids = np.asarray(ids)
        width, height = sizes[stems.index(stem)]
        if ids.dtype.kind not in "iu" or ids.shape != (height, width):
            raise BundleError(
                f"the panoptic map of {stem!r} must be integer ids of shape ({height}, {width}), "
                f"found {ids.dtype.name} {ids.shape}"
            )
        used = np.unique(ids)
        unknown = [int(s) for s in used if s != 0 and int(s) not in segment_ids]
        if unknown or (used.size and (used[0] < 0 or used[-1] > MAX_SEGMENT_ID)):
            raise BundleError(
                f"the panoptic map of {stem!r} uses ids {unknown[:10]} that are not in the manifest's "
                "segments (0 means void)"
            )
        out[stem] = ids.astype(np.int32)
    return out


def _check_photos(images: Any, stems: list[str], sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Processed photos: uint8 [H, W, 3] of the processed size."""
    if not isinstance(images, Mapping):
        raise BundleError("images must be a dict of image stem -> uint8 [H, W, 3] photo")
    for stem, rgb in images.items():
        if stem not in stems:
            raise BundleError(f"a photo is given for {stem!r}, which is not an image stem")
        width, height = sizes[stems.index(stem)]
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != (height, width, 3):
            raise BundleError(f"the photo of {stem!r} must be uint8 of shape ({height}, {width}, 3)")
    return dict(images)


def _check_extra(extra_files: Mapping[str, Any] | None) -> dict[str, Path | Callable[[Path], Any]]:
    """Extra files: plain, non-reserved names; each a source file to copy or a function that writes the file."""
    out: dict[str, Path | Callable[[Path], Any]] = {}
    for name, src in (extra_files or {}).items():
        checks.check_stem(name, "extra file name")
        if name in RESERVED_NAMES:
            raise BundleError(f"extra file name {name!r} is reserved by the bundle format")
        if callable(src):
            out[name] = src
            continue
        if not Path(src).is_file():
            raise BundleError(f"extra file {name!r}: {src} does not exist")
        out[name] = Path(src)
    return out


def _segment_stats(points: dict[str, np.ndarray], maps: dict[str, np.ndarray], stems: list[str]) -> dict[int, dict]:
    """Per segment id: point_count, bbox_min/max and views (from points and panoptic maps)."""
    mask = points["segment"] != 0
    seg, xyz, view = points["segment"][mask], points["xyz"][mask], points["view"][mask].astype(np.int64)
    stats: dict[int, dict] = {}
    if seg.size:
        order = np.argsort(seg, kind="stable")
        ids, starts, counts = np.unique(seg[order], return_index=True, return_counts=True)
        lows, highs = np.minimum.reduceat(xyz[order], starts), np.maximum.reduceat(xyz[order], starts)
        for s, n, low, high in zip(ids.tolist(), counts.tolist(), lows.tolist(), highs.tolist()):
            stats[s] = {"point_count": n, "bbox_min": low, "bbox_max": high, "views": set()}
        for pair in np.unique((seg.astype(np.int64) << 16) | view).tolist():
            stats[pair >> 16]["views"].add(pair & 0xFFFF)
    for stem, ids_map in maps.items():
        for s in np.unique(ids_map).tolist():
            if s:
                stats.setdefault(s, {"point_count": 0, "bbox_min": None, "bbox_max": None, "views": set()})
                stats[s]["views"].add(stems.index(stem))
    return stats


def _fill_class_colors(classes: object, segments: list) -> None:
    """Give classes without a ``color`` one from ``vocab.colors.class_colors`` (distinct among the classes the
    segments use, avoiding the colours given); malformed entries are left to the checks."""
    if not isinstance(classes, list):
        return
    named = [c for c in classes if isinstance(c, dict) and isinstance(c.get("name"), str)]
    if all("color" in c for c in named):
        return
    used = {s.get("class_id") for s in segments if isinstance(s, dict)}
    given = {i: c["color"] for i, c in enumerate(named) if "color" in c}
    fixed = {i: tuple(c) for i, c in given.items() if isinstance(c, list) and len(c) == 3 and _is_rgb(c)}
    colors = class_colors(
        [c["name"] for c in named], [i for i, c in enumerate(named) if c.get("id") in used], fixed=fixed
    )
    for entry, color in zip(named, colors):
        entry.setdefault("color", list(color))


def _is_rgb(values: list) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)


def _fill_segments(segments: list, stats: dict[int, dict]) -> None:
    """Fill colour, point_count, views and bbox where not given; a given point_count must match the points."""
    empty = {"point_count": 0, "bbox_min": None, "bbox_max": None, "views": set()}
    for seg in segments:
        seg_id = seg["id"]
        found = stats.get(seg_id, empty)
        if seg.setdefault("point_count", found["point_count"]) != found["point_count"]:
            raise BundleError(
                f"segment {seg_id} says point_count {seg['point_count']} but the points hold "
                f"{found['point_count']}; leave point_count out to have it computed"
            )
        seg.setdefault("color", list(instance_color(seg_id)))
        seg.setdefault("views", sorted(found["views"]))
        seg.setdefault("bbox_min", found["bbox_min"])
        seg.setdefault("bbox_max", found["bbox_max"])


def _fill_panoptic_entries(entries: Any, maps: dict[str, np.ndarray], class_of: dict[int, int]) -> None:
    """One manifest entry per given map; segments_info computed from the map unless given."""
    if not isinstance(entries, dict):
        raise BundleError("manifest 'panoptic' must be a JSON object of image stem -> entry")
    orphans = sorted(set(entries) - set(maps))
    if orphans:
        raise BundleError(f"manifest 'panoptic' has an entry for {orphans[0]!r} but no panoptic map was given for it")
    for stem, ids in maps.items():
        entry = entries.setdefault(stem, {})
        entry.setdefault("file", panoptic_file(stem))
        if "segments_info" not in entry:
            entry["segments_info"] = panoptic_segments_info(ids, class_of)


def _prepare(manifest: Any, points: Any, panoptic: Any, images: Any, extra_files: Any) -> tuple:
    """Validate everything and fill the derived manifest fields; touches no file."""
    m = _jsonable(manifest)
    if not isinstance(m, dict):
        raise BundleError("the manifest must be a dict")
    m.setdefault("format_version", FORMAT_VERSION)
    m.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    m.setdefault("engine", {"name": "panst3r_engine", "version": __version__})
    m.setdefault("options", {})
    m.setdefault("timings", {})
    checks.check_header(m)
    stems = checks.check_images(m["images"])
    sizes = checks.processed_sizes(m["images"])
    segments = checks.need(m, "segments", "the manifest")
    if not isinstance(segments, list):
        raise BundleError("manifest 'segments' must be a list")
    _fill_class_colors(checks.need(m, "classes", "the manifest"), segments)
    seg_ids = {checks.as_int(checks.need(s, "id", "a manifest segment"), "segment 'id'", 1) for s in segments}
    arrays = checks.check_points(points, sizes, seg_ids, strict=False)
    maps = _check_maps(panoptic, stems, sizes, seg_ids)
    _fill_segments(segments, _segment_stats(arrays, maps, stems))
    class_of = checks.check_segments(segments, checks.check_classes(m["classes"]), len(stems))
    _fill_panoptic_entries(m.setdefault("panoptic", {}), maps, class_of)
    checks.check_manifest(m)
    try:
        text = json.dumps(m, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"the manifest cannot be written as strict JSON ({exc}); replace NaN, infinity and non-JSON objects in it"
        ) from None
    return text, arrays, maps, _check_photos(images, stems, sizes), _check_extra(extra_files)


# ---------------------------------------------------------------- writing
def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber anything but an earlier bundle (or an empty folder), and only with overwrite."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BundleError(f"{out_dir} exists and is not a folder; choose another output folder")
    if not overwrite:
        raise BundleError(f"{out_dir} already exists; choose another output folder or pass --overwrite to replace it")
    _check_replaceable(out_dir)


def _check_replaceable(out_dir: Path) -> None:
    """Only an empty folder or a readable bundle holding nothing but its own files may be replaced.

    Why: replacing deletes the folder, and a folder that merely holds a manifest.json may hold a user's files.
    """
    if not any(out_dir.iterdir()):
        return
    try:
        bundle = read_bundle(out_dir)
    except BundleError as exc:
        raise BundleError(
            f"refusing to replace {out_dir}: it is not a readable result bundle ({exc}); choose another output folder"
        ) from None
    others = _foreign_entries(out_dir, bundle.manifest, bundle.stems)
    if others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise BundleError(
            f"refusing to replace {out_dir}: besides a result bundle it holds {listed}; "
            "move those away or choose another output folder"
        )


def _foreign_entries(out_dir: Path, manifest: dict, stems: list[str]) -> list[str]:
    """Bundle-relative names in ``out_dir`` that a bundle with this manifest does not consist of (links included)."""
    ours = {
        MANIFEST,
        POINTS,
        PANOPTIC_DIR,
        IMAGES_DIR,
        *OPTIONAL_FILES,
        *map(image_file, stems),
        *(entry["file"] for entry in manifest["panoptic"].values()),
    }
    found = []
    for folder, dirs, files in os.walk(out_dir):
        here = Path(folder).relative_to(out_dir)
        found += [
            (here / name).as_posix()
            for name in sorted(dirs + files)
            if (here / name).as_posix() not in ours or (out_dir / here / name).is_symlink()
        ]
        dirs[:] = [name for name in dirs if (here / name).as_posix() in ours]  # a foreign folder is named once
    return found


def _write_contents(folder: Path, text: str, arrays: dict, maps: dict, photos: dict, extra: dict) -> None:
    """Write every file of the bundle into ``folder`` (the manifest last)."""
    with open(folder / POINTS, "wb") as fh:
        np.savez(fh, **arrays)
    if maps:
        (folder / PANOPTIC_DIR).mkdir()
    for stem, ids in maps.items():
        Image.fromarray(encode_panoptic(ids), "RGB").save(folder / panoptic_file(stem), format="PNG")
    if photos:
        (folder / IMAGES_DIR).mkdir()
    for stem, rgb in photos.items():
        Image.fromarray(rgb, "RGB").save(folder / image_file(stem), format="JPEG", quality=JPEG_QUALITY)
    for name, src in extra.items():
        if callable(src):
            src(folder / name)  # written in place: the folder is private until it is published
        else:
            shutil.copyfile(src, folder / name)
    (folder / MANIFEST).write_text(text, encoding="utf-8")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename tmp to out_dir; an existing out_dir is moved aside first and deleted only afterwards."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(6)}")
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse up front an output folder a job could not publish to (an empty folder is fine)."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        return
    _check_target(out_dir, overwrite)


def publish_bundle(staging: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Move a finished bundle folder (written elsewhere, e.g. then given splats) to ``out_dir`` atomically."""
    staging, out_dir = Path(staging), Path(out_dir)
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    _check_target(out_dir, overwrite)
    try:
        _move_into_place(staging, out_dir)
    except OSError as exc:
        raise _os_error(exc, out_dir) from exc
    return out_dir


_STAGING = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{12}")


def staging_path(out_dir: str | os.PathLike) -> Path:
    """A hidden sibling of ``out_dir`` to build a bundle in (same file system, so the final rename is atomic).

    Its name carries this process's id, so a later run can tell an abandoned one (see :func:`remove_stale_staging`).
    """
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (or cannot tell): leave it alone
    return True


def remove_stale_staging(out_dir: str | os.PathLike) -> list[Path]:
    """Delete staging folders of ``out_dir`` left by processes that no longer run (killed mid-job).

    Only folders named exactly as :func:`staging_path` names them, for this ``out_dir``, are considered.
    """
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for entry in out_dir.parent.iterdir():
        match = _STAGING.fullmatch(entry.name)
        if (
            match
            and match["name"] == out_dir.name
            and entry.is_dir()
            and not entry.is_symlink()
            and not _alive(int(match["pid"]))
        ):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _os_error(exc: OSError, out_dir: Path) -> BundleError:
    """One sentence for a failed write."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return BundleError(
            f"not enough disk space to write the result bundle {out_dir}; "
            "free some space or choose another output folder"
        )
    return BundleError(
        f"could not write the result bundle {out_dir} ({exc.strerror or exc}); check that the folder is writable"
    )


def write_bundle_files(
    folder: str | os.PathLike,
    manifest: dict,
    points: dict[str, np.ndarray],
    panoptic: dict[str, np.ndarray],
    images: dict[str, np.ndarray],
    extra_files: Mapping[str, Path | Callable[[Path], Any]] | None = None,
) -> dict:
    """Validate, then write every file of a bundle into ``folder`` (an existing, empty, private folder).

    The arguments are those of :func:`write_bundle`. Returns the manifest as written. Nothing is renamed: the
    caller publishes the folder (:func:`publish_bundle`) once everything else is there.
    """
    return _write_prepared(Path(folder), _prepare(manifest, points, panoptic, images, extra_files))


def _write_prepared(folder: Path, prepared: tuple) -> dict:
    text = prepared[0]
    try:
        _write_contents(folder, *prepared)
    except OSError as exc:
        raise _os_error(exc, folder) from exc
    return json.loads(text)


def write_bundle(
    out_dir: str | os.PathLike,
    manifest: dict,
    points: dict[str, np.ndarray],
    panoptic: dict[str, np.ndarray],
    images: dict[str, np.ndarray],
    extra_files: Mapping[str, Path | Callable[[Path], Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Validate and write a result bundle atomically.

    Args:
        out_dir: the bundle folder to create.
        manifest: the manifest; ``format_version``, ``created``, ``engine``, ``options``, ``timings``, class and
            segment colours, segments' ``point_count``/``views``/``bbox_*`` and the ``panoptic`` entries
            (``file``, ``segments_info``) are filled when absent. The caller's dict is not modified.
        points: the six arrays of the format (lossless casts to the format's dtypes are made).
        panoptic: image stem -> int [H, W] segment ids (0 = void) at the processed size.
        images: image stem -> uint8 [H, W, 3] processed photo.
        extra_files: bundle file name -> source path copied as is, or a function writing that file
            (``splats.ply``, ``raw.npz``).
        overwrite: replace an existing bundle at out_dir, only once the new one is complete.
    Returns:
        out_dir as a Path. Raises :class:`BundleError` (nothing is left behind) on any problem.
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, overwrite)
    prepared = _prepare(manifest, points, panoptic, images, extra_files)  # decide before touching the disk
    staging = staging_path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        _write_prepared(staging, prepared)
        return publish_bundle(staging, out_dir, overwrite)
    except OSError as exc:
        raise _os_error(exc, out_dir) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
