"""The disk-backed per-view store: exact in float32, bounded rounding in float16, cleans up only its own files."""

from __future__ import annotations

import pytest
import torch

from panst3r_engine.pipeline.viewstore import ViewStore


def test_float32_round_trip_is_exact_and_one_file_per_view(tmp_path):
    views = [torch.randn(5, 6, 7) for _ in range(3)]
    store = ViewStore(3, tmp_path / "scratch", torch.float32, "masks")
    for i, v in enumerate(views):
        store[i] = v
    assert len(list((tmp_path / "scratch").iterdir())) == 3
    assert all(torch.equal(a, b) for a, b in zip(store, views))  # iterates like the list it replaces
    store.close()
    assert not (tmp_path / "scratch").exists()  # it made the folder, so it removes it


def test_float16_keeps_logits_within_half_precision(tmp_path):
    logits = torch.randn(50, 40, 30) * 8
    store = ViewStore(1, tmp_path, torch.float16)
    store[0] = logits
    back = store[0]
    assert back.dtype == torch.float32
    # float16 keeps 11 significant bits: relative error <= 2^-11 (values here are far above its subnormals)
    assert ((back - logits).abs() <= logits.abs() * 2**-11 + 1e-7).all()
    assert not torch.equal(back, logits)


def test_close_leaves_a_folder_it_did_not_make_and_its_other_files(tmp_path):
    (tmp_path / "theirs.txt").write_text("keep")
    store = ViewStore(2, tmp_path, name="pointmaps")
    store[0] = store_value = torch.ones(2, 2)
    store.truncate(1)
    assert torch.equal(store[0], store_value) and len(store) == 1
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.txt"]


def test_in_ram_store_and_bad_indices():
    store = ViewStore(2, None, torch.float16)
    store[1] = torch.full((3,), 0.1)
    assert store[1].dtype == torch.float32 and abs(float(store[1][0]) - 0.1) < 1e-4
    with pytest.raises(KeyError, match="never stored"):
        store[0]
    with pytest.raises(IndexError):
        store[2] = torch.zeros(1)
    assert list(map(len, [store])) == [2]
