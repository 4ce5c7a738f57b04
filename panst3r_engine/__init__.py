"""PanSt3R engine: unordered, pose-free photos to a 3D panoptic scene.

A clean-room implementation of PanSt3R (ICCV 2025) that loads the official
checkpoints and reproduces their outputs numerically.
"""

__version__ = "0.1.0"
