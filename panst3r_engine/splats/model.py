"""The Gaussian-splat model: raw (pre-activation) parameters as the INRIA 3DGS PLY stores them, plus labels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814  # Y_0^0; rgb = 0.5 + SH_C0 * f_dc


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC SH coefficient from a 0-1 colour (the inverse of gsplat's ``sh2rgb``)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def sh_degree_of(num_rest: int) -> int:
    """SH degree from the number of non-DC coefficients per channel (0, 3, 8, 15, 24)."""
    degree = round(math.sqrt(num_rest + 1)) - 1
    if (degree + 1) ** 2 - 1 != num_rest:
        raise ValueError(f"{num_rest} higher-order SH coefficients per channel is not (d+1)^2-1 for any degree d")
    return degree


@dataclass
class SplatModel:
    """N Gaussians. Values are stored raw, as in INRIA's PLY: log scales, logit opacities, wxyz quaternions.

    Keeping the raw values (not activated ones) makes export/import bit-exact and lets the optimiser work on
    unconstrained parameters. ``segment`` is the bundle's segment id (0 = unlabelled), ``class_id`` its class
    (-1 = none). ``background`` is the colour behind all Gaussians, estimated by the fit.
    """

    means: Tensor  # [N, 3] float32, world (OpenCV axes of the bundle)
    scales: Tensor  # [N, 3] float32, log of the standard deviations
    quats: Tensor  # [N, 4] float32, wxyz, not necessarily normalised
    opacities: Tensor  # [N] float32, logit
    sh0: Tensor  # [N, 1, 3] float32
    shN: Tensor  # [N, K, 3] float32, K = (degree+1)^2 - 1
    segment: Tensor  # [N] int32
    class_id: Tensor  # [N] int32
    background: Tensor = field(default_factory=lambda: torch.zeros(3))  # [3] float32, 0-1

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
            "segment": (n,),
            "class_id": (n,),
            "background": (3,),
        }
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"SplatModel.{name} must have shape {shape}, found {tuple(getattr(self, name).shape)}")
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3:
            raise ValueError(f"SplatModel.shN must have shape ({n}, K, 3), found {tuple(self.shN.shape)}")
        sh_degree_of(self.shN.shape[1])

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.shN.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: str | torch.device) -> SplatModel:
        return replace(self, **{name: getattr(self, name).to(device) for name in TENSOR_FIELDS})

    def detach(self) -> SplatModel:
        return replace(self, **{name: getattr(self, name).detach().clone() for name in TENSOR_FIELDS})

    def sh_coeffs(self) -> Tensor:
        """[N, (degree+1)^2, 3]: DC then the higher orders, as the rasteriser takes them."""
        return torch.cat([self.sh0, self.shN], dim=1)

    def activated(self) -> tuple[Tensor, Tensor, Tensor]:
        """(quats [N, 4], scales [N, 3], opacities [N]) as the rasteriser takes them."""
        return self.quats, torch.exp(self.scales), torch.sigmoid(self.opacities)


TENSOR_FIELDS = ("means", "scales", "quats", "opacities", "sh0", "shN", "segment", "class_id", "background")
