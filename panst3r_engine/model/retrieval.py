"""MUSt3R's retrieval head: local descriptors for keyframe retrieval, computed on the encoder tokens.

MUSt3R (arXiv 2503.01661, §3.4) chooses keyframes by image retrieval: a small head maps each view's encoder
tokens (1024-d, after ``norm_enc``) to local descriptors, keeps the ``nfeat`` with the largest L2 norm as in
HOW (Tolias et al., ECCV 2020, "Learning and aggregating deep local descriptors for instance-level
recognition"), and ASMK compares the views (:mod:`panst3r_engine.pipeline.asmk`). The head is: an optional
whitening (subtract ``m``, multiply by ``p``, in float64), a projector MLP (Linear, then LayerNorm + GELU +
Linear per further width of ``hdims``; optionally residual), the attention = L2 norm of the projection, and an
optional second whitening. Its published file ``MUSt3R_512_retrieval_trainingfree.pth`` is a dict
``{'model': state dict without the backbone, 'args': ...}``; the codebook sits beside it with the name's last
``_`` token replaced by ``codebook.pkl``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.checkpoints import CheckpointError, check_state_dict
from panst3r_engine.model.codebook import load_codebook, write_codebook_pickle

MAX_RETRIEVAL_BYTES = 256 << 20  # the published head is about 8.4 MB
DEFAULT_NFEAT = 300  # HOW's default number of local descriptors per image


class RetrievalError(PanSt3RError):
    """Retrieval weights that cannot be used, with a sentence saying what to do."""

    code = "weights"


@dataclass(frozen=True)
class RetrievalConfig:
    """The head's sizes and settings (from the checkpoint's ``args`` and its tensor shapes)."""

    in_dim: int = 1024
    hdims: tuple[int, ...] = (1024,)
    prewhiten: bool = False
    postwhiten: bool = False
    residual: bool = False
    nfeat: int = DEFAULT_NFEAT
    nclusters: int | None = None  # the codebook's size (args ``nclusters``); None: whatever the codebook holds

    @property
    def out_dim(self) -> int:
        return self.hdims[-1] if self.hdims else self.in_dim


class Whitener(nn.Module):
    """``(x - m) @ p`` in float64 (learned or PCA whitening), returned in the input's dtype."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1, dim, dtype=torch.float64))
        self.p = nn.Parameter(torch.eye(dim, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(torch.float64) - self.m) @ self.p).to(x.dtype)


def _projector(in_dim: int, hdims: tuple[int, ...]) -> nn.Module:
    """Linear to ``hdims[0]``, then LayerNorm, GELU and Linear for each further width (keys 0, 1, 3, 4, 6, ...)."""
    if not hdims:
        return nn.Identity()
    layers: list[nn.Module] = [nn.Linear(in_dim, hdims[0])]
    for prev, width in zip(hdims, hdims[1:]):
        layers += [nn.LayerNorm(prev), nn.GELU(), nn.Linear(prev, width)]
    return nn.Sequential(*layers)


class RetrievalHead(nn.Module):
    """Encoder tokens [N, in_dim] -> local descriptors [min(N, nfeat), out_dim], L2-normalised."""

    def __init__(self, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prewhiten = Whitener(cfg.in_dim) if cfg.prewhiten else nn.Identity()
        self.projector = _projector(cfg.in_dim, cfg.hdims)
        self.postwhiten = Whitener(cfg.out_dim) if cfg.postwhiten else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [..., N, in_dim] -> (features [..., N, out_dim], attention [..., N])."""
        x = self.prewhiten(tokens)
        feat = x + self.projector(x) if self.cfg.residual else self.projector(x)
        attention = feat.norm(dim=-1)
        return self.postwhiten(feat), attention

    @torch.no_grad()
    def local_descriptors(self, tokens: torch.Tensor) -> torch.Tensor:
        """One view's tokens [N, in_dim] -> its ``nfeat`` strongest descriptors [K, out_dim] (unit length)."""
        if tokens.ndim != 2 or tokens.shape[-1] != self.cfg.in_dim:
            raise RetrievalError(
                f"the retrieval head takes {self.cfg.in_dim}-d encoder tokens but got shape {tuple(tokens.shape)}; "
                "use the retrieval files made for this model's encoder"
            )
        feat, attention = self(tokens.float())
        keep = attention.topk(min(self.cfg.nfeat, len(attention))).indices
        return nn.functional.normalize(feat[keep].float(), dim=-1)


@dataclass(frozen=True)
class Retrieval:
    """A loaded head, its codebook [nclusters, out_dim], and the files they came from."""

    head: RetrievalHead
    codebook: np.ndarray
    checkpoint: Path
    codebook_file: Path


def codebook_path(checkpoint: str | os.PathLike) -> Path:
    """The codebook beside ``checkpoint``: the name's last ``_`` token replaced by ``codebook.pkl``
    (``MUSt3R_512_retrieval_trainingfree.pth`` -> ``MUSt3R_512_retrieval_codebook.pkl``)."""
    checkpoint = Path(checkpoint)
    head, sep, _ = checkpoint.name.rpartition("_")
    return checkpoint.with_name(f"{head}{sep}codebook.pkl")


def _hdims(value) -> tuple[int, ...]:
    """``hdims`` as the official args spell it: an int, a list, or a string like ``"1024"`` / ``"1024_512"``."""
    if value is None or value == "":
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(int(v) for v in value.replace(",", "_").split("_") if v.strip())
    return tuple(int(v) for v in value)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise RetrievalError(f"the retrieval weights {path} do not exist; download them or name the right file")
    size = path.stat().st_size
    if size == 0 or size > MAX_RETRIEVAL_BYTES:
        raise RetrievalError(f"the retrieval weights {path} have {size} bytes, not a retrieval head; download again")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RetrievalError(
            f"the retrieval weights {path} hold Python objects that a weights file never needs; refusing to load them"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise RetrievalError(f"the retrieval weights {path} are truncated or corrupt; download them again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise RetrievalError(f"{path} is not a MUSt3R retrieval file (expected a dict with 'model' and 'args')")
    return data


def config_from_checkpoint(args, weights: dict[str, torch.Tensor], path: Path) -> RetrievalConfig:
    """The head's config: settings from ``args``, widths from the tensors (so the two must agree)."""
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    if args.get("featweights", "l2norm") != "l2norm":
        raise RetrievalError(f"{path}: feature weights {args['featweights']!r} are not supported (only 'l2norm')")
    if "projector.0.weight" in weights:
        in_dim = int(weights["projector.0.weight"].shape[1])
    elif "prewhiten.m" in weights:
        in_dim = int(weights["prewhiten.m"].shape[-1])
    else:
        raise RetrievalError(f"{path}: the retrieval head has neither a projector nor a whitening")
    try:
        widths = [int(weights["projector.0.weight"].shape[0])] if "projector.0.weight" in weights else []
        hdims = _hdims(args.get("hdims", widths))
        return RetrievalConfig(
            in_dim=in_dim,
            hdims=hdims,
            prewhiten="prewhiten.m" in weights,
            postwhiten="postwhiten.m" in weights,
            residual=bool(args.get("residual", False)),
            nfeat=int(args.get("nfeat", DEFAULT_NFEAT)),
            nclusters=int(args["nclusters"]) if args.get("nclusters") is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise RetrievalError(f"{path}: its 'args' do not describe a retrieval head ({exc!r})") from exc


def load_retrieval(checkpoint: str | os.PathLike, codebook: str | os.PathLike | None = None) -> Retrieval:
    """Load the head (``weights_only``, strict) and its codebook (restricted unpickling, cached as ``.npz``)."""
    checkpoint = Path(checkpoint)
    codebook = Path(codebook) if codebook else codebook_path(checkpoint)
    data = _read(checkpoint)
    weights = data["model"]
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise RetrievalError(f"{checkpoint}: 'model' is not a state dict of tensors")
    cfg = config_from_checkpoint(data.get("args"), weights, checkpoint)
    head = RetrievalHead(cfg)
    try:
        check_state_dict({k: v.shape for k, v in head.state_dict().items()}, weights, str(checkpoint))
    except CheckpointError as exc:
        raise RetrievalError(str(exc).replace("checkpoint", "retrieval head", 1)) from exc
    head.load_state_dict(weights, strict=True)
    centroids = load_codebook(codebook)
    if centroids.shape != (cfg.nclusters or len(centroids), cfg.out_dim):
        raise RetrievalError(
            f"the codebook {codebook} has shape {centroids.shape} but the head {checkpoint} needs "
            f"({cfg.nclusters or 'any'}, {cfg.out_dim}); use the codebook published with this head"
        )
    return Retrieval(head.eval(), centroids, checkpoint, codebook)


def random_retrieval_state(cfg: RetrievalConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random head weights (whitenings near identity, so descriptors keep the tokens' structure)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, tensor in RetrievalHead(cfg).state_dict().items():
        noise = torch.randn(tuple(tensor.shape), generator=gen, dtype=torch.float64) * 0.02
        out[key] = (tensor.double() + noise).to(tensor.dtype) if key.endswith((".p", ".m")) else noise.to(tensor.dtype)
        if key.endswith(".weight") and tensor.ndim == 2:
            out[key] = out[key] + torch.eye(*tensor.shape)
        elif key.endswith(".weight"):
            out[key] = out[key] + 1.0
    return out


def write_random_retrieval(
    path: str | os.PathLike,
    in_dim: int = 64,
    hdims: tuple[int, ...] = (32,),
    nclusters: int = 16,
    nfeat: int = 24,
    seed: int = 0,
) -> Path:
    """A retrieval file in the published layout with random weights, and its codebook pickle beside it
    (centroids: unit vectors drawn with ``seed``). For tests and smoke runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = RetrievalConfig(in_dim, tuple(hdims), True, False, False, nfeat, nclusters)
    args = argparse.Namespace(
        freeze_backbone=1,
        prewhiten=-1,
        hdims="_".join(map(str, hdims)),
        residual=False,
        postwhiten=None,
        featweights="l2norm",
        nfeat=nfeat,
        imsize=512,
        nclusters=nclusters,
    )
    tmp = path.with_name(path.name + ".partial")
    torch.save({"model": random_retrieval_state(cfg, seed), "args": args}, tmp)
    os.replace(tmp, path)
    centroids = np.random.default_rng(seed).standard_normal((nclusters, cfg.out_dim)).astype(np.float32)
    write_codebook_pickle(codebook_path(path), centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    return path
