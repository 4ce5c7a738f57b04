"""Turning bundle data into Blender datablocks: points, cameras, materials."""

RESULT_PROPERTY = "panst3r_result"  # marks a result collection (the bundle folder is in its "bundle" property)
