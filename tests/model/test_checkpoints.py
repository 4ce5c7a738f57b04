"""Checkpoint reading: official layout, key sets, and one clear message per kind of bad file."""

from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
import torch

from panst3r_engine.model.checkpoints import (
    CheckpointError,
    build_model,
    load_model,
    official_to_ours,
    random_state_dict,
    read_checkpoint,
    write_checkpoint,
    write_random_checkpoint,
)
from panst3r_engine.model.configs import model_config


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_state_dict_matches_official_manifest(parity_dir, version):
    manifest = json.loads((parity_dir / "manifests" / f"panst3r_{version}_state_dict.json").read_text())
    expected = {key: tuple(shape) for key, shape, _ in manifest["tensors"]}
    ours = {key: tuple(t.shape) for key, t in build_model(model_config(version)).state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert list(ours) == list(expected), "key order differs from the official state dict"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_official_config_strings_pick_the_right_model(parity_dir, version, tmp_path):
    manifest = json.loads((parity_dir / "manifests" / f"panst3r_{version}_state_dict.json").read_text())
    cfg = model_config(version, tiny=True)
    path = tmp_path / "ckpt.pth"
    write_checkpoint(path, cfg, random_state_dict(cfg))
    data = torch.load(path, weights_only=False)
    # Replace our strings by the official ones: the parser must map them to the full-size model.
    data["args"] = argparse.Namespace(**manifest["config_strings"], postprocess_default="qubo")
    data["weights"] = {}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(path)
    _, info = read_checkpoint(path)
    assert info.config == model_config(version).__class__(
        **{**model_config(version).__dict__, "postprocess_default": "qubo"}
    )


def test_dinov2_transformers5_spelling_is_accepted(tmp_path):
    cfg = model_config("v1", tiny=True)
    weights = random_state_dict(cfg)
    renamed = {}
    for key, value in weights.items():
        key = key.replace(".attention.attention.query.", ".attention.q_proj.").replace(
            ".attention.output.dense.", ".attention.o_proj."
        )
        renamed[key] = value
    assert any(".q_proj." in k for k in renamed)
    assert official_to_ours(renamed).keys() == weights.keys()
    write_checkpoint(tmp_path / "t5.pth", cfg, renamed)
    model, _ = load_model(tmp_path / "t5.pth")
    torch.testing.assert_close(model.state_dict(), weights, rtol=0, atol=0)


def test_random_checkpoint_round_trip(tmp_path):
    path = write_random_checkpoint(tmp_path / "tiny.pth", "v2", "tiny", seed=3)
    assert path.stat().st_size < 10 * 2**20
    model, info = load_model(path)
    assert info.config == model_config("v2", tiny=True)
    assert not model.training
    torch.testing.assert_close(model.state_dict(), random_state_dict(info.config, seed=3), rtol=0, atol=0)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return write_random_checkpoint(tmp_path / "tiny.pth", "v1", "tiny")


def test_truncated_file(tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tiny_checkpoint)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "photo.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(512))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model(tmp_path / "photo.pth")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a PanSt3R checkpoint.*'weights' and 'args'"):
        load_model(tmp_path / "other.pth")


def test_missing_key(tmp_path):
    cfg = model_config("v1", tiny=True)
    weights = random_state_dict(cfg)
    del weights["must3r_decoder.image2_embed"]
    write_checkpoint(tmp_path / "m.pth", cfg, weights)
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) missing: must3r_decoder.image2_embed"):
        load_model(tmp_path / "m.pth")


def test_unexpected_key(tmp_path):
    cfg = model_config("v1", tiny=True)
    weights = random_state_dict(cfg)
    weights["panoptic_decoder.mask_transformer.nocls_token"] = torch.zeros(64)
    write_checkpoint(tmp_path / "u.pth", cfg, weights)
    with pytest.raises(
        CheckpointError, match=r"1 tensor\(s\) unexpected: panoptic_decoder.mask_transformer.nocls_token"
    ):
        load_model(tmp_path / "u.pth")


def test_wrong_shape(tmp_path):
    cfg = model_config("v2", tiny=True)
    weights = random_state_dict(cfg)
    weights["must3r_encoder.norm_enc.weight"] = torch.ones(65)
    write_checkpoint(tmp_path / "s.pth", cfg, weights)
    with pytest.raises(
        CheckpointError, match=r"wrong shape: must3r_encoder.norm_enc.weight \(65,\) \(expected \(64,\)\)"
    ):
        load_model(tmp_path / "s.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"args": _Evil(), "weights": {}, "epoch": 0}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="not allowed in a weights file"):
        load_model(path)


def test_unknown_constructor_is_refused(tmp_path):
    cfg = model_config("v1", tiny=True)
    path = write_checkpoint(tmp_path / "x.pth", cfg, random_state_dict(cfg))
    data = torch.load(path, weights_only=False)
    data["args"].panoptic_decoder = "__import__('os').system('true')"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="unsupported"):
        load_model(path)


def test_absurd_sizes_in_args_are_refused_before_building(tmp_path):
    """A crafted checkpoint whose args ask for ten million layers is refused at once, not built for minutes."""
    from panst3r_engine.model.configs import model_config
    from panst3r_engine.model.constructor_args import ConstructorError, args_from_config, config_from_args

    args = args_from_config(model_config("v2"))
    args["must3r_encoder"] = args["must3r_encoder"].replace(
        "PatchEmbedDust3R'", "PatchEmbedDust3R', embed_dim=1024, depth=10000000, num_heads=16"
    )
    with pytest.raises(ConstructorError, match=r"model.encoder.depth = 10000000, outside 0..256"):
        config_from_args(args)
