"""Evaluation: PQ^scene and mIoU (Panoptic Lifting protocol), geometry and camera errors."""

from panst3r_engine.eval.geometry_metrics import camera_errors, chamfer, focal_error, umeyama
from panst3r_engine.eval.metrics import mean_iou, panoptic_quality_per_view, panoptic_quality_scene

__all__ = [
    "camera_errors",
    "chamfer",
    "focal_error",
    "mean_iou",
    "panoptic_quality_per_view",
    "panoptic_quality_scene",
    "umeyama",
]
