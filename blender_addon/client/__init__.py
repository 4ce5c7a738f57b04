"""Talking to the PanSt3R engine (local subprocess or remote URL) and running jobs: no bpy."""
