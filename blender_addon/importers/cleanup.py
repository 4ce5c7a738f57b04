"""Leave nothing behind: the datablocks an import created are removed when it fails part-way.

The kinds of datablock an import can create are snapshotted (by pointer) before it starts; on an error,
whatever is new in them was made by this import (Blender runs one operator at a time) and is removed in
one ``bpy.data.batch_remove``. Datablocks that existed before, including reused materials, shared node
groups and already loaded photos, are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import bpy

KINDS = ("objects", "meshes", "materials", "collections", "node_groups", "images", "cameras")


def _snapshot() -> dict[str, set[int]]:
    return {kind: {id_.as_pointer() for id_ in getattr(bpy.data, kind)} for kind in KINDS}


def _created_since(before: dict[str, set[int]]) -> list:
    return [id_ for kind in KINDS for id_ in getattr(bpy.data, kind) if id_.as_pointer() not in before[kind]]


@contextmanager
def removed_on_error() -> Iterator[None]:
    """Run the body; if it raises, remove every datablock it created, then let the error go on."""
    before = _snapshot()
    try:
        yield
    except BaseException:
        created = _created_since(before)
        if created:
            bpy.data.batch_remove(created)
        raise
