"""The network-level command-line contract: ``weights random`` and ``run --save-raw``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.vocab.embeddings import random_embeddings, save_embeddings

REPO = Path(__file__).resolve().parents[1]


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panst3r_engine", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    photos = []
    for i in range(3):
        path = root / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        photos.append(str(path))
    emb = random_embeddings(["chair", "table"], 768)
    save_embeddings(root / "emb.npz", emb.names, emb.vectors)
    return root, photos


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_random_weights_then_raw_outputs(tiny_setup, version):
    root, photos = tiny_setup
    ckpt = root / f"tiny_{version}.pth"
    result = engine("weights", "random", "--size", "tiny", "--version", version, "--out", str(ckpt))
    assert result.returncode == 0, result.stderr
    assert 0 < ckpt.stat().st_size < 8 * 2**20
    out = root / f"out_{version}"
    result = engine(
        "run",
        *photos,
        "--weights",
        str(ckpt),
        "--vocab-embeddings",
        str(root / "emb.npz"),
        "--keyframes",
        "2",
        "--resize",
        "none",
        "--device",
        "cpu",
        "--save-raw",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    raw = np.load(out / "raw.npz")
    assert raw["pointmaps_raw"].shape == (3, 48, 64, 7)
    assert raw["pts3d"].shape == (3, 48, 64, 3)
    assert raw["conf"].shape == (3, 48, 64) and (raw["conf"] > 1).all()
    assert raw["pred_logits"].shape == (200, 2)
    assert raw["pred_masks"].shape == (3, 200, 24, 32)
    assert raw["out_queries"].shape[0] == 200
    assert raw["true_shape"].tolist() == [[48, 64]] * 3
    assert raw["keyframes"].tolist() == [0, 2]
    assert np.isfinite(raw["pred_masks"]).all()


def test_size_not_multiple_of_16_is_refused(tiny_setup):
    root, photos = tiny_setup
    odd = root / "odd.png"
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(odd)
    ckpt = root / "tiny_v1.pth"
    if not ckpt.exists():
        engine("weights", "random", "--size", "tiny", "--version", "v1", "--out", str(ckpt))
    out = root / "out_odd"
    result = engine(
        "run",
        photos[0],
        str(odd),
        "--weights",
        str(ckpt),
        "--vocab-embeddings",
        str(root / "emb.npz"),
        "--resize",
        "none",
        "--device",
        "cpu",
        "--save-raw",
        "--out",
        str(out),
    )
    assert result.returncode == 2
    assert "odd.png: 50x40 pixels" in result.stderr and "multiples of 16" in result.stderr
    assert not (out / "raw.npz").exists()


def test_embedding_width_must_match_the_model(tiny_setup):
    root, photos = tiny_setup
    emb = random_embeddings(["chair"], 512)
    save_embeddings(root / "emb512.npz", emb.names, emb.vectors)
    ckpt = root / "tiny_v1.pth"
    if not ckpt.exists():
        engine("weights", "random", "--size", "tiny", "--version", "v1", "--out", str(ckpt))
    result = engine(
        "run",
        *photos,
        "--weights",
        str(ckpt),
        "--vocab-embeddings",
        str(root / "emb512.npz"),
        "--resize",
        "none",
        "--device",
        "cpu",
        "--out",
        str(root / "o512"),
    )
    assert result.returncode == 2
    assert "512-d but the model expects 768-d" in result.stderr
