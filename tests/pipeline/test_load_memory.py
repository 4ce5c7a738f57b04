"""Loading photos for a job keeps only the photos in RAM: each float32 network input goes to the job's scratch
store as it is made, and the heap pages it leaves free are given back, so resident memory follows the photos."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from panst3r_engine.pipeline.images import load_photo, load_photos
from panst3r_engine.pipeline.memory import release_free_memory, trimming
from panst3r_engine.pipeline.viewstore import ViewStore


def _photos(folder, count: int) -> list:
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 255, (384, 512 + 8 * count, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        path = folder / f"p{i:03d}.jpg"
        Image.fromarray(strip[:, 8 * i : 8 * i + 512]).save(path, quality=90)
        paths.append(path)
    return paths


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_inputs_go_to_the_store_bit_for_bit(tmp_path):
    paths = _photos(tmp_path, 3)
    portrait = tmp_path / "portrait.png"
    Image.fromarray(np.asarray(Image.open(paths[0]))[:, :300].copy()).save(portrait)  # 300x384
    paths.append(portrait)
    store = ViewStore(len(paths), tmp_path / "scratch", torch.float32, "inputs")
    photos = load_photos(paths, "512", store)
    for i, (path, photo) in enumerate(zip(paths, photos)):
        expected = load_photo(path, "512").tensor
        assert photo.tensor.numel() == 0 and torch.equal(store[i], expected)
        assert photo.network_size == tuple(expected.shape[-2:])
    assert photos[3].transposed


def test_resident_memory_follows_the_photos_not_the_inputs_they_dropped(tmp_path):
    """Without giving free pages back, glibc kept about 2.5 MB per 512x384 photo resident (the dropped
    inputs' pages between the photos kept): 40 photos, ~100 MB over the photos' 24 MB."""
    paths = _photos(tmp_path, 40)
    store = ViewStore(len(paths), tmp_path / "scratch", torch.float32, "inputs")
    calls = []
    report = trimming(lambda *args: calls.append(args), interval=0.0)
    release_free_memory()
    before = _rss()
    photos = load_photos(paths, "512", store, lambda fraction: report("load_images", fraction))
    release_free_memory()
    grown = _rss() - before
    held = sum(p.rgb.nbytes for p in photos)
    assert grown < held + 30 * 2**20, (grown / 2**20, held / 2**20)
    assert [c[1] for c in calls] == [i / 40 for i in range(40)]
