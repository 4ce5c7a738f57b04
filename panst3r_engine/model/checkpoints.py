"""Loading and writing PanSt3R checkpoints in the official layout, safely.

An official ``.pth`` is a ``torch.save`` dict ``{'args', 'weights', 'epoch'}``
(``args`` an ``argparse.Namespace`` of constructor strings, ``weights`` the
full model state dict). We load it with ``weights_only=True`` allowing only
``argparse.Namespace``, never ``eval`` the strings (see
:mod:`panst3r_engine.model.constructor_args`), map key spellings in one pure
function (:func:`official_to_ours`) and load strictly, naming any missing,
unexpected or mis-shaped tensor.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.configs import ModelConfig, Version, model_config
from panst3r_engine.model.constructor_args import ConstructorError, args_from_config, config_from_args

# transformers 5.x renamed the DINOv2 attention projections; the checkpoints use the 4.x names.
_DINO_RENAMES = {
    ".attention.q_proj.": ".attention.attention.query.",
    ".attention.k_proj.": ".attention.attention.key.",
    ".attention.v_proj.": ".attention.attention.value.",
    ".attention.o_proj.": ".attention.output.dense.",
}


class CheckpointError(PanSt3RError):
    """A checkpoint that cannot be used, with a sentence saying why."""

    code = "weights"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: ModelConfig
    epoch: int | None
    args: dict
    class_embeddings: object = None  # a trained checkpoint's own entry, checked by vocab.checkpoint


def official_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys of any supported spelling to ours (= the official transformers-4.x names)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("dino_encoder."):
            for new, old in _DINO_RENAMES.items():
                key = key.replace(new, old)
        out[key] = value
    return out


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); download it again")
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK") and not is_zip:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (its zip directory is missing); download it again"
        )
    if not is_zip and not magic.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln or "global" in ln.lower()]
        blocked = lines[0] if lines else str(exc).splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} holds Python objects that are not allowed in a weights file; "
            f"refusing to load it ({blocked})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if is_zip or "zip" in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc}); download it again") from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or "weights" not in data or "args" not in data:
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path} is not a PanSt3R checkpoint: expected a dict with 'weights' and 'args', found {found}"
        )
    return data


def _args_dict(args) -> dict:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, dict):
        return args
    raise CheckpointError(f"the checkpoint's 'args' is a {type(args).__name__}, expected a namespace")


def check_state_dict(expected: dict[str, torch.Size], weights: dict[str, torch.Tensor], name: str) -> None:
    """Raise one message naming missing, unexpected and mis-shaped tensors."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [
        f"{k} {tuple(weights[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in weights and tuple(weights[k].shape) != tuple(expected[k])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with a wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} tensor(s) {label}: {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"checkpoint {name} does not match the model it declares: " + "; ".join(problems))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read and validate a checkpoint; returns (state dict in our spelling, info)."""
    path = Path(path)
    data = _read(path)
    args = _args_dict(data["args"])
    try:
        cfg = config_from_args(args)
    except ConstructorError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    weights = data["weights"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"checkpoint {path}: 'weights' is not a state dict of tensors")
    info = CheckpointInfo(path, cfg, data.get("epoch"), args, data.get("class_embeddings"))
    return official_to_ours(weights), info


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """An uninitialised model (no memory allocated until weights are assigned)."""
    from panst3r_engine.model.panst3r import PanSt3R

    with torch.device("meta"):
        return PanSt3R(cfg)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load an official (or our) checkpoint into a ready-to-run model in eval mode.

    Returns (model, info).
    """
    weights, info = read_checkpoint(path)
    model = build_model(info.config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, weights, str(info.path))
    weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval(), info


def random_state_dict(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights for ``cfg`` (normal * 0.02; norm scales around 1).

    The rule is the parity fixtures' (per-key generator from crc32 of the key),
    offset by ``seed``; ``seed=0`` gives exactly the fixtures' weights.
    """
    model = build_model(cfg)
    out = {}
    for key, tensor in model.state_dict().items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")) + seed)
        value = torch.randn(tuple(tensor.shape), generator=gen) * 0.02
        if key.endswith(".weight") and tensor.ndim == 1:
            value += 1.0
        out[key] = value
    return out


def write_checkpoint(
    path: str | os.PathLike, cfg: ModelConfig, weights: dict[str, torch.Tensor], epoch: int = 0
) -> Path:
    """Write ``{'args', 'weights', 'epoch'}`` in the official layout, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"args": argparse.Namespace(**args_from_config(cfg)), "weights": weights, "epoch": epoch}, tmp)
    os.replace(tmp, path)
    return path


def write_random_checkpoint(path: str | os.PathLike, version: Version, size: str = "tiny", seed: int = 0) -> Path:
    """A checkpoint with random weights, ``size`` 'tiny' (a few MB) or 'full' (3.5 GB / 3.2 GB)."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    cfg = model_config(version, tiny=size == "tiny")
    return write_checkpoint(path, cfg, random_state_dict(cfg, seed))


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
