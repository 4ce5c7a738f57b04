"""Turning bundle data into Blender datablocks: points, cameras, materials."""

RESULT_PROPERTY = "panst3r_result"  # marks a result collection (the bundle folder is in its "bundle" property)


def result_collections(scene) -> list:
    """The imported results in ``scene`` (collections marked with :data:`RESULT_PROPERTY`), in tree order."""
    return [c for c in scene.collection.children_recursive if c.get(RESULT_PROPERTY)]
