"""The README's main-job command from a clean state: a checkpoint placed in the cache, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.model.checkpoints import write_random_checkpoint
from panst3r_engine.vocab.embeddings import cache_embeddings, random_embeddings
from panst3r_engine.vocab.vocabularies import load_vocabulary

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / "examples" / "room").is_dir(), reason="examples/room photos are not in this checkout")
def test_demo_runs_on_the_example_photos(tmp_path):
    home = tmp_path / "home"
    write_random_checkpoint(home / "weights" / "panst3r_v2_512_5ds.pth", "v2", "tiny")
    vocab = load_vocabulary("scannetpp")  # embeddings the user would have cached on a first, online run
    cache_embeddings(random_embeddings(list(vocab.names), 768), cache_dir=home)
    env = {**os.environ, "PANST3R_HOME": str(home), "PANST3R_OFFLINE": "1", "VIRTUAL_ENV": sys.prefix,
           "PANST3R_DEMO_OUT": str(tmp_path / "out" / "room")}
    bash = shutil.which("bash")
    result = subprocess.run([bash, "scripts/demo.sh", "--keyframes", "3", "--conf-threshold", "1.0"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bundle = read_bundle(tmp_path / "out" / "room")
    photos = sorted(p.name for p in (REPO / "examples" / "room").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert [im["file"] for im in bundle.manifest["images"]] == photos
    assert len(bundle.manifest["cameras"]) == len(photos)
    assert "segments" in result.stdout and "total" in result.stdout


def test_demo_without_weights_says_what_to_place_where(tmp_path):
    env = {**os.environ, "PANST3R_HOME": str(tmp_path / "empty"), "PANST3R_OFFLINE": "1", "VIRTUAL_ENV": sys.prefix,
           "PANST3R_DEMO_OUT": str(tmp_path / "out")}
    result = subprocess.run([shutil.which("bash"), "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "panst3r_v2_512_5ds.pth" in result.stderr
    assert str(tmp_path / "empty" / "weights") in result.stderr
    assert not (tmp_path / "out").exists()
