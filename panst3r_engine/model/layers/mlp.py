"""Two-layer perceptron (Linear, activation, Linear) with the official key names."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``; no dropout (inference only).

    Args:
        in_dim: input width.
        hidden_dim: width of ``fc1``'s output.
        out_dim: output width (defaults to ``in_dim``).
        act_layer: activation class (GELU, exact erf form, unless told otherwise).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
