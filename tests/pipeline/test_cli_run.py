"""``run`` from the command line: JSON progress, the summary table, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "panst3r_engine", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_json_progress_reports_every_stage_in_order(tiny_checkpoint, photo_dir, tmp_path):
    result = engine("run", str(photo_dir), "--weights", str(tiny_checkpoint), "--vocab-embeddings", "random",
                    "--json-progress", "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    order = ["load_images", "load_model", "vocabulary", "encode", "memory", "render_keyframes", "decode_keyframes",
             "postprocess", "cameras", "write_bundle"]
    firsts = [s for i, s in enumerate(stages) if s not in stages[:i]]
    assert firsts == order
    assert all(0.0 <= e["fraction"] <= 1.0 for e in events if e["event"] == "progress")
    assert events[-1]["event"] == "done" and Path(events[-1]["bundle"]) == tmp_path / "b"
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_summary_table_and_failure_exit_code(tiny_checkpoint, photo_dir, tmp_path):
    result = engine("run", str(photo_dir), "--weights", str(tiny_checkpoint), "--vocab-embeddings", "random",
                    "--out", str(tmp_path / "ok"))
    assert result.returncode == 0, result.stderr
    assert "segments:" in result.stdout and "stage" in result.stdout and "total" in result.stdout
    (photo_dir / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = engine("run", str(photo_dir), "--weights", str(tiny_checkpoint), "--vocab-embeddings", "random",
                    "--out", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert "zz_broken.jpg: not a readable image" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_missing_weights_name_the_file(photo_dir, tmp_path, monkeypatch):
    result = subprocess.run([sys.executable, "-m", "panst3r_engine", "run", str(photo_dir), "--weights", "v1",
                             "--vocab-embeddings", "random", "--out", str(tmp_path / "x")], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PANST3R_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    assert "panst3r_v1_512_5ds.pth" in result.stderr
