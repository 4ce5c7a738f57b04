"""torchrun on CPU (gloo, 2 processes, DistributedDataParallel) trains what one process with twice the batch trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from panst3r_engine.cli import main
from panst3r_engine.model.checkpoints import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_twice_the_batch(painted_scenes, tiny_v2, tmp_path) -> None:
    common = [
        *map(str, painted_scenes),
        "--init", str(tiny_v2), "--steps", "2", "--accum", "1", "--views", "2", "--num-points", "64",
        "--resize", "none", "--vocab-embeddings", "random", "--device", "cpu", "--warmup", "1",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert main(["train", *common, "--batch-size", "2", "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*torchrun, "-m", "panst3r_engine", "train", *common, "--batch-size", "1", "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes (gloo)" in done.stderr  # torch's DDP, not a hand all-reduce
    one, _ = read_checkpoint(tmp_path / "one" / "final.pth")
    two, _ = read_checkpoint(tmp_path / "two" / "final.pth")
    # Same samples and points; only the order of float sums differs (per-process gradients are averaged).
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-6, msg=key)
    init, _ = read_checkpoint(tiny_v2)
    assert any(not torch.equal(init[k], one[k]) for k in one)
