"""The engine's reader of a result bundle (the contract is :mod:`.spec`).

The manifest and points are loaded and validated at once; panoptic maps and
photos are decoded on demand, since a bundle of many views can hold hundreds
of megapixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from panst3r_engine.bundle import checks
from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.spec import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    POINTS,
    RESERVED_NAMES,
    bundle_path,
    decode_panoptic,
    image_file,
    load_json,
    points_byte_limit,
    read_limited,
    read_npz,
)

_CORRUPT = "the bundle is corrupt, run the job again"


def _file(root: Path, relative: str) -> Path | None:
    """A bundle file that is no link and stays inside the bundle (spec.bundle_path), or None when absent."""
    try:
        return bundle_path(root, relative)
    except ValueError as exc:
        raise BundleError(str(exc)) from None


@dataclass
class Bundle:
    """A bundle read from disk: manifest and points loaded, per-image files read on demand."""

    path: Path
    manifest: dict
    points: dict[str, np.ndarray]

    @property
    def stems(self) -> list[str]:
        return [entry["stem"] for entry in self.manifest["images"]]

    @property
    def classes_by_id(self) -> dict[int, dict]:
        return {entry["id"]: entry for entry in self.manifest["classes"]}

    @property
    def segments_by_id(self) -> dict[int, dict]:
        return {entry["id"]: entry for entry in self.manifest["segments"]}

    def _size(self, stem: str) -> tuple[int, int]:
        """(W, H) of a processed image."""
        if stem not in self.stems:
            raise BundleError(f"the bundle {self.path} has no image with stem {stem!r}")
        width, height = self.manifest["images"][self.stems.index(stem)]["processed_size"]
        return int(width), int(height)

    def _read_rgb(self, relative: str, stem: str, kind: str) -> np.ndarray:
        """Decode an RGB file of the processed size; its header is checked before any pixel is decoded."""
        width, height = self._size(stem)
        path = _file(self.path, relative)
        if path is None:
            raise BundleError(f"the bundle {self.path} lacks {relative}; it is incomplete, run the job again")
        try:
            with open(path, "rb") as fh, Image.open(fh, formats=[kind]) as im:
                if im.mode != "RGB" or im.size != (width, height):
                    raise BundleError(
                        f"{path} must be an RGB image of {width}x{height}, found {im.mode} {im.size}; {_CORRUPT}"
                    )
                return np.asarray(im)
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure on a received file is the file's fault
            raise BundleError(f"cannot decode {path} as {kind} ({type(exc).__name__}: {exc}); {_CORRUPT}") from None

    def panoptic(self, stem: str) -> np.ndarray:
        """int32 [H, W] segment ids of an image (0 = void)."""
        entry = self.manifest["panoptic"].get(stem)
        if entry is None:
            self._size(stem)
            raise BundleError(f"the bundle {self.path} has no panoptic map for image {stem!r}")
        return decode_panoptic(self._read_rgb(entry["file"], stem, "PNG"))

    def has_image(self, stem: str) -> bool:
        return _file(self.path, image_file(stem)) is not None

    def image(self, stem: str) -> np.ndarray:
        """uint8 [H, W, 3]: the processed photo."""
        return self._read_rgb(image_file(stem), stem, "JPEG")

    def extra(self, name: str) -> Path | None:
        """Path of a pass-through file (``splats.ply``, ``raw.npz``), or None when absent."""
        checks.check_stem(name, "extra file name")
        return None if name in RESERVED_NAMES else _file(self.path, name)


def _load_manifest(root: Path) -> dict:
    path = _file(root, MANIFEST)
    if path is None:
        raise BundleError(f"{root} is not a result bundle: it has no {MANIFEST}")
    try:
        return load_json(read_limited(path, MAX_MANIFEST_BYTES), str(path))
    except OSError as exc:
        raise BundleError(f"cannot read {path} ({exc.strerror or exc}); check the folder's permissions") from None
    except ValueError as exc:
        raise BundleError(f"{exc}; {_CORRUPT}") from None


def _load_points(root: Path, sizes: np.ndarray) -> dict[str, np.ndarray]:
    """points.npz, refused before inflating beyond what the manifest's images can hold."""
    path = _file(root, POINTS)
    if path is None:
        raise BundleError(f"the bundle has no {POINTS} ({root / POINTS}); it is incomplete, run the job again")
    try:
        return read_npz(path, points_byte_limit(int(sizes.prod(axis=1).sum())))
    except ValueError as exc:
        raise BundleError(f"{exc}; {_CORRUPT}") from None


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle folder (or its manifest.json); raises :class:`BundleError`."""
    root = Path(path)
    if root.name == MANIFEST and root.is_file():
        root = root.parent
    manifest = _load_manifest(root)
    _, sizes, class_of = checks.check_manifest(manifest)
    points = checks.check_points(_load_points(root, sizes), sizes, set(class_of), strict=True)
    for entry in manifest["panoptic"].values():
        if _file(root, entry["file"]) is None:
            raise BundleError(f"the bundle lacks {entry['file']}; it is incomplete, run the job again")
    return Bundle(root, manifest, points)
