"""The engine's reader of a result bundle (the contract is :mod:`.spec`).

The manifest and points are loaded and validated at once; panoptic maps and
photos are decoded on demand, since a bundle of many views can hold hundreds
of megapixels.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from panst3r_engine.bundle import checks
from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.spec import MANIFEST, POINTS, RESERVED_NAMES, decode_panoptic, image_file


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

    def _read_rgb(self, path: Path, stem: str) -> np.ndarray:
        """Decode an RGB file of the processed size."""
        width, height = self._size(stem)
        try:
            with Image.open(path) as im:
                if im.mode != "RGB" or im.size != (width, height):
                    raise BundleError(f"{path} must be an RGB image of {width}x{height}, found {im.mode} {im.size}")
                return np.asarray(im)
        except OSError as exc:
            raise BundleError(f"cannot read {path} ({exc}); the bundle is incomplete or corrupt") from None

    def panoptic(self, stem: str) -> np.ndarray:
        """int32 [H, W] segment ids of an image (0 = void)."""
        entry = self.manifest["panoptic"].get(stem)
        if entry is None:
            self._size(stem)
            raise BundleError(f"the bundle {self.path} has no panoptic map for image {stem!r}")
        return decode_panoptic(self._read_rgb(self.path / entry["file"], stem))

    def has_image(self, stem: str) -> bool:
        return (self.path / image_file(stem)).is_file()

    def image(self, stem: str) -> np.ndarray:
        """uint8 [H, W, 3]: the processed photo."""
        return self._read_rgb(self.path / image_file(stem), stem)

    def extra(self, name: str) -> Path | None:
        """Path of a pass-through file (``splats.ply``, ``raw.npz``), or None when absent."""
        checks.check_stem(name, "extra file name")
        path = self.path / name
        return path if name not in RESERVED_NAMES and path.is_file() else None


def _load_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a result bundle: it has no {MANIFEST}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is corrupt, run the job again") from None


def _load_points(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BundleError(f"the bundle has no {POINTS} ({path}); it is incomplete, run the job again")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path} cannot be read ({exc}); the bundle is corrupt, run the job again") from None


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle folder (or its manifest.json); raises :class:`BundleError`."""
    root = Path(path)
    if root.name == MANIFEST and root.is_file():
        root = root.parent
    manifest = _load_manifest(root)
    _, sizes, class_of = checks.check_manifest(manifest)
    points = checks.check_points(_load_points(root / POINTS), sizes, set(class_of), strict=True)
    for entry in manifest["panoptic"].values():
        if not (root / entry["file"]).is_file():
            raise BundleError(f"the bundle lacks {entry['file']}; it is incomplete, run the job again")
    return Bundle(root, manifest, points)
