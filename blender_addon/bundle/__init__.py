"""Reading the engine's result bundle (format 1.x) into plain data: no bpy."""
