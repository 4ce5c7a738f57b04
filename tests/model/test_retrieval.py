"""MUSt3R's retrieval head: shapes, the published file layout, strict and safe loading, the codebook beside it."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch

from panst3r_engine.model.codebook import write_codebook_pickle
from panst3r_engine.model.retrieval import (
    RetrievalConfig,
    RetrievalError,
    RetrievalHead,
    Whitener,
    _hdims,
    codebook_path,
    load_retrieval,
    random_retrieval_state,
    write_random_retrieval,
)


def test_codebook_sits_beside_the_head_with_the_last_token_replaced(tmp_path):
    head = tmp_path / "MUSt3R_512_retrieval_trainingfree.pth"
    assert codebook_path(head) == tmp_path / "MUSt3R_512_retrieval_codebook.pkl"
    assert codebook_path(tmp_path / "MUSt3R_224_retrieval_trainingfree.pth").name == "MUSt3R_224_retrieval_codebook.pkl"
    assert codebook_path(tmp_path / "head.pth").name == "codebook.pkl"


def test_head_keeps_the_strongest_tokens_as_unit_descriptors():
    cfg = RetrievalConfig(in_dim=16, hdims=(12, 8), prewhiten=True, postwhiten=True, nfeat=5, nclusters=4)
    head = RetrievalHead(cfg).eval()
    assert sorted(head.state_dict()) == [
        "postwhiten.m",
        "postwhiten.p",
        "prewhiten.m",
        "prewhiten.p",
        "projector.0.bias",
        "projector.0.weight",
        "projector.1.bias",  # LayerNorm, then GELU (no parameters), then the second Linear
        "projector.1.weight",
        "projector.3.bias",
        "projector.3.weight",
    ]
    tokens = torch.randn(2, 30, 16)
    feat, attention = head(tokens)
    assert feat.shape == (2, 30, 8) and attention.shape == (2, 30)
    desc = head.local_descriptors(tokens[0])
    assert desc.shape == (5, 8)
    torch.testing.assert_close(desc.norm(dim=-1), torch.ones(5))
    # The five kept are the five largest projection norms (before post-whitening), in that order.
    with torch.no_grad():
        x = head.projector(head.prewhiten(tokens[0]))
        keep = x.norm(dim=-1).topk(5).indices
        torch.testing.assert_close(desc, torch.nn.functional.normalize(head.postwhiten(x)[keep], dim=-1))
    assert head.local_descriptors(tokens[0, :3]).shape == (3, 8)  # fewer tokens than nfeat: all of them
    with pytest.raises(RetrievalError, match="takes 16-d encoder tokens"):
        head.local_descriptors(torch.randn(30, 24))


def test_whitener_works_in_float64():
    w = Whitener(3)
    with torch.no_grad():
        w.m.copy_(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
        w.p.copy_(torch.diag(torch.tensor([2.0, 0.5, -1.0], dtype=torch.float64)))
    out = w(torch.tensor([[3.0, 4.0, 5.0]]))
    assert out.dtype == torch.float32 and out.tolist() == [[4.0, 1.0, -2.0]]
    assert w.p.dtype == torch.float64


def test_hdims_as_the_official_args_spell_them():
    assert _hdims("1024") == (1024,) and _hdims("1024_512") == (1024, 512) and _hdims([64]) == (64,)
    assert _hdims(32) == (32,) and _hdims("") == () and _hdims(None) == ()


def test_random_file_loads_with_its_codebook(tmp_path):
    path = write_random_retrieval(tmp_path / "MUSt3R_tiny_retrieval_trainingfree.pth", in_dim=64, hdims=(32,))
    assert codebook_path(path).is_file()
    r = load_retrieval(path)
    assert r.head.cfg == RetrievalConfig(64, (32,), True, False, False, 24, 16)
    assert r.codebook.shape == (16, 32) and r.codebook.dtype == np.float32
    assert r.codebook_file.with_suffix(".npz").is_file()  # converted once, beside the pickle
    state = random_retrieval_state(r.head.cfg)
    for key, value in r.head.state_dict().items():
        torch.testing.assert_close(value, state[key])


def _save(path, model, args):
    torch.save({"model": model, "args": args}, path)
    return path


def test_wrong_keys_shapes_and_codebooks_are_named(tmp_path):
    path = write_random_retrieval(tmp_path / "a_trainingfree.pth")
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True, map_location="cpu")
    model, args = data["model"], data["args"]
    bad = dict(model)
    del bad["projector.0.bias"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(RetrievalError, match=r"missing: projector\.0\.bias.*unexpected: extra\.weight"):
        load_retrieval(_save(tmp_path / "b_trainingfree.pth", bad, args), codebook_path(path))
    write_codebook_pickle(tmp_path / "c_codebook.pkl", np.ones((16, 5), dtype=np.float32))
    with pytest.raises(RetrievalError, match=r"has shape \(16, 5\) but the head .* needs \(16, 32\)"):
        load_retrieval(_save(tmp_path / "c_trainingfree.pth", model, args))
    other = argparse.Namespace(**{**vars(args), "featweights": "softmax"})
    with pytest.raises(RetrievalError, match="feature weights 'softmax' are not supported"):
        load_retrieval(_save(tmp_path / "d_trainingfree.pth", model, other))
    loose = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "nclusters"})
    sized_by_codebook = load_retrieval(_save(tmp_path / "e_trainingfree.pth", model, loose), codebook_path(path))
    assert sized_by_codebook.head.cfg.nclusters is None and sized_by_codebook.codebook.shape == (16, 32)
    with pytest.raises(RetrievalError, match="do not exist; download them or name the right file"):
        load_retrieval(tmp_path / "missing_trainingfree.pth")


class _Run:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_and_truncated_heads_are_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil_trainingfree.pth"
    torch.save({"model": {}, "args": _Run(marker)}, evil)
    with pytest.raises(RetrievalError, match="hold Python objects that a weights file never needs"):
        load_retrieval(evil)
    assert not marker.exists()
    good = write_random_retrieval(tmp_path / "good_trainingfree.pth")
    cut = tmp_path / "cut_trainingfree.pth"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(RetrievalError, match="truncated or corrupt"):
        load_retrieval(cut, codebook_path(good))


def test_weights_random_writes_a_head_for_its_encoder(tmp_path, capsys):
    from panst3r_engine.cli import main

    assert main(["weights", "random", "--out", str(tmp_path / "tiny.pth"), "--retrieval"]) == 0
    r = load_retrieval(tmp_path / "tiny_retrieval_trainingfree.pth")
    assert r.head.cfg.in_dim == 64 and r.codebook.shape == (32, 32)  # the tiny encoder's width
    assert (tmp_path / "tiny_retrieval_codebook.pkl").is_file() and "random retrieval head" in capsys.readouterr().out
