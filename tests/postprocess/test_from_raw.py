"""``postprocess RAW.npz --method M --out DIR`` reproduces the official post-processing outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panst3r_engine", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("method", ["standard_v1", "standard_v2", "qubo"])
def test_postprocess_command_matches_fixture(parity_dir, tmp_path, method):
    fixture = np.load(parity_dir / "outputs" / "postproc.npz")
    raw = tmp_path / "raw.npz"
    np.savez(
        raw,
        pred_logits=fixture["pp_in_pred_logits"],
        pred_masks=fixture["pp_in_pred_masks"],
        true_shape=fixture["pp_in_true_shape"],
    )
    result = engine("postprocess", str(raw), "--method", method, "--seed", "0", "--out", str(tmp_path / "pp"))
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "pp" / "panoptic.npz")
    assert out["pan"].dtype == np.int32
    ref_pan, ref_conf = fixture[f"pp_{method}_pan"], fixture[f"pp_{method}_conf"]
    assert out["pan"].shape == ref_pan.shape
    assert (out["pan"] != ref_pan).mean() <= 0.0005
    agree = out["pan"] == ref_pan
    assert np.abs(out["conf"][agree] - ref_conf[agree]).max() <= 1e-5


def test_postprocess_refuses_a_file_that_is_not_raw(tmp_path):
    bad = tmp_path / "raw.npz"
    np.savez(bad, something=np.zeros(3))
    result = engine("postprocess", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "lacks pred_logits, pred_masks, true_shape" in result.stderr


@pytest.mark.parametrize("method", ["standard_v2", "qubo"])
def test_postprocess_raw_pads_views_of_different_sizes(method):
    from panst3r_engine.postprocess.from_raw import postprocess_raw

    rng = np.random.default_rng(0)
    shapes = np.array([[16, 24], [24, 16]])
    masks = np.full((2, 4, 12, 12), -50.0, np.float32)  # half resolution, padded to the largest view
    masks[0, 0, :, :6], masks[0, 1, :, 6:], masks[1, 0, :6, :], masks[1, 1, 6:, :] = 50.0, 50.0, 50.0, 50.0
    masks[0, :, 8:, :] = np.nan  # padding beyond view 0's 8 half-rows must never be read
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    logits[:2, 1] = 20.0
    out = postprocess_raw({"pred_logits": logits, "pred_masks": masks, "true_shape": shapes}, method, seed=0)
    assert out["pan"].shape == out["conf"].shape == (2, 24, 24) and out["pan"].dtype == np.int32
    assert out["conf"].dtype == np.float32 and np.isfinite(out["conf"]).all()
    assert out["true_shape"].tolist() == shapes.tolist()
    assert not out["pan"][0, 16:].any() and not out["pan"][1, :, 16:].any() and not out["conf"][0, 16:].any()
    assert len(out["segment_ids"]) == len(out["segment_classes"]) == 2
    assert set(np.unique(out["pan"][0, :16, :24])) == set(out["segment_ids"].tolist())
