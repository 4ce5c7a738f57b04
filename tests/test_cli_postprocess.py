"""``postprocess RAW.npz --method M --out DIR`` reproduces the official post-processing outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", ["standard_v1", "standard_v2", "qubo"])
def test_postprocess_command_matches_fixture(parity_dir, tmp_path, method):
    fixture = np.load(parity_dir / "outputs" / "postproc.npz")
    raw = tmp_path / "raw.npz"
    np.savez(raw, pred_logits=fixture["pp_in_pred_logits"], pred_masks=fixture["pp_in_pred_masks"],
             true_shape=fixture["pp_in_true_shape"])
    result = subprocess.run([sys.executable, "-m", "panst3r_engine", "postprocess", str(raw), "--method", method,
                             "--seed", "0", "--out", str(tmp_path / "pp")], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
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
    result = subprocess.run([sys.executable, "-m", "panst3r_engine", "postprocess", str(bad), "--out", str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "lacks pred_logits, pred_masks, true_shape" in result.stderr
