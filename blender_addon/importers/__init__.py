"""Turning bundle data into Blender datablocks: points, cameras, materials."""
