"""Point sampling of mask logits and targets (Mask2Former, Cheng et al. CVPR 2022, §3.3 / PointRend).

Losses and matching costs are computed on P random points per (mask, view) instead of every
pixel. Points are normalised (x, y) in [0, 1]; predictions (stride 2) and full-size targets are
read at the same places with bilinear ``grid_sample`` (align_corners False), so resolutions need
not agree. Points in the outer half pixel read the edge value (``padding_mode='border'``), not a
blend with zero as detectron2's ``point_sample`` default would. PanSt3R's released recipe uses
oversample_ratio 1 and importance_sample_ratio 1, for which uncertainty-based importance sampling
keeps every uniform candidate: the points are plainly uniform (PanSt3R fact sheet §9.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` [N, V, H, W] at ``coords`` [N, V, P, 2] or [V, P, 2] (x, y in [0, 1]).

    Returns [N, V, P] in ``maps``' dtype promoted to float.
    """
    n, v, h, w = maps.shape
    if coords.ndim == 3:
        coords = coords.unsqueeze(0).expand(n, -1, -1, -1)
    grid = (2.0 * coords - 1.0).reshape(n * v, 1, -1, 2).to(maps.device, torch.float32)
    values = F.grid_sample(
        maps.reshape(n * v, 1, h, w).float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return values.reshape(n, v, -1)


def random_points(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform random points [*shape, 2] in [0, 1], drawn on the CPU from ``generator`` (reproducible)."""
    return torch.rand(*shape, 2, generator=generator)
