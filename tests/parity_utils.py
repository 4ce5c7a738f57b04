"""Shared fixtures: where the parity fixtures live, and the official weight-fill rule."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("PANST3R_PARITY_DIR", REPO.parent / "shared" / "parity"))


def parity_path() -> Path:
    """The parity folder, or skip the calling test with the reason."""
    if not (PARITY_DIR / "README.md").is_file():
        pytest.skip(
            f"parity fixtures not found at {PARITY_DIR} (set PANST3R_PARITY_DIR or place shared/ beside the checkout)"
        )
    return PARITY_DIR


def fill_tensor(key: str, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The parity README's deterministic weight rule for one state-dict entry."""
    gen = torch.Generator(device="cpu").manual_seed(zlib.crc32(key.encode("utf-8")))
    value = torch.randn(list(shape), generator=gen, dtype=torch.float32) * 0.02
    if key.endswith(".weight") and len(shape) == 1:
        value = value + 1.0
    return value.to(dtype)


@torch.no_grad()
def fill_module(module: torch.nn.Module, prefix: str = "") -> None:
    """Fill every parameter of ``module`` in place by the rule, keyed ``prefix + name``."""
    for name, tensor in module.state_dict(keep_vars=True).items():
        tensor.data.copy_(fill_tensor(prefix + name, tensor.shape))


def load_manifest(parity: Path, version: str) -> list[tuple[str, list[int], str]]:
    data = json.loads((parity / "manifests" / f"panst3r_{version}_state_dict.json").read_text())
    return [tuple(entry) for entry in data["tensors"]]


def load_case(parity: Path, name: str) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of a fixture case, with arrays stored in other files pulled in."""
    meta = json.loads((parity / "outputs" / f"{name}.json").read_text())
    arrays = dict(np.load(parity / "outputs" / f"{name}.npz"))
    for key, where in (meta.get("arrays_stored_in_other_file") or {}).items():
        other = where.split(" ")[0]
        arrays[key] = np.load(parity / "outputs" / other)[key]
    return arrays, meta


def load_parity_images(parity: Path) -> torch.Tensor:
    """The fixture views as the official ImgNorm gives them: [V, 3, H, W] in [-1, 1]."""
    from PIL import Image

    views = []
    for i in range(3):
        rgb = np.asarray(Image.open(parity / "inputs" / f"view{i}.png").convert("RGB"), dtype=np.float32)
        views.append(torch.from_numpy(rgb / 255.0).permute(2, 0, 1))
    return (torch.stack(views) - 0.5) / 0.5
