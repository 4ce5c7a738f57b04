"""Tests of the Blender add-on (plain Python for client/bundle/build, real bpy for the rest)."""
