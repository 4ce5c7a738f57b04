"""Reading the engine's result bundle (format 1.x) into plain data: no bpy.

``_spec`` is the engine's ``panst3r_engine/bundle/spec.py``, copied byte for byte by build.py (the add-on never
imports the engine); ``read`` and ``splats`` take every name, dtype and encoding from it.
"""
