"""Display colours for classes and segments: the one place that decides them.

A class takes its dataset's published colour when it has one (COCO panoptic,
then ADE20k). Other classes get a colour derived from the *name* alone (an MD5
of the normalised name picks a hue and one of a few saturation/value tiers), so
the same class has the same colour in every job, whatever the vocabulary or its
order. Segment (instance) colours walk the hue circle by the golden ratio, so
neighbouring segment ids get well separated hues. Both stay clear of
near-black and near-white: value >= 0.68 and saturation >= 0.5, so the
brightest channel is >= 173 and the darkest <= 122.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from panst3r_engine.vocab.vocabularies import _preset_entries

_CLASS_SATURATION = (0.55, 0.7, 0.85)
_CLASS_VALUE = (0.92, 0.8, 0.68)
_INSTANCE_SATURATION = (0.65, 0.8, 0.5)
_INSTANCE_VALUE = (0.95, 0.75, 0.85)
_GOLDEN = 0.6180339887498949


def _hsv_to_rgb8(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> (r, g, b) in 0..255."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


@lru_cache(maxsize=1)
def _official_colors() -> dict[str, tuple[int, int, int]]:
    """Name -> published colour: COCO panoptic first, then the ADE20k palette for names COCO lacks."""
    table: dict[str, tuple[int, int, int]] = {}
    for preset in ("coco", "ade20k"):
        for entry in _preset_entries(preset):
            if "color" in entry:
                table.setdefault(entry["name"].strip().lower(), tuple(int(c) for c in entry["color"]))
    return table


def class_color(name: str) -> tuple[int, int, int]:
    """Stable (r, g, b) of a class name: the dataset's published colour for preset names, else
    :func:`hashed_class_color`."""
    color = _official_colors().get(name.strip().lower())
    return color if color is not None else hashed_class_color(name)


def hashed_class_color(name: str) -> tuple[int, int, int]:
    """Colour of a class from its name only (case and surrounding spaces ignored)."""
    digest = hashlib.md5(name.strip().lower().encode("utf-8")).digest()
    hue = int.from_bytes(digest[:4], "little") / 2**32
    return _hsv_to_rgb8(hue, _CLASS_SATURATION[digest[4] % 3], _CLASS_VALUE[digest[5] % 3])


def class_colors(names: Iterable[str]) -> list[tuple[int, int, int]]:
    """:func:`class_color` of each name, in order."""
    return [class_color(name) for name in names]


def instance_color(segment_id: int) -> tuple[int, int, int]:
    """Colour of one segment id; consecutive ids get distant hues."""
    segment_id = int(segment_id)
    return _hsv_to_rgb8(
        segment_id * _GOLDEN, _INSTANCE_SATURATION[segment_id % 3], _INSTANCE_VALUE[(segment_id // 3) % 3]
    )


def instance_colors(segment_ids: Iterable[int]) -> np.ndarray:
    """uint8 [K, 3]: :func:`instance_color` of each id (ids as given, e.g. a segment array's uniques)."""
    colors = [instance_color(i) for i in np.asarray(list(segment_ids), dtype=np.int64).ravel()]
    return np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
