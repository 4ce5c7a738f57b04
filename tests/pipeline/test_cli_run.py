"""``run`` from the command line: JSON progress, the summary table, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panst3r_engine", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_json_progress_reports_every_stage_in_order(tiny_checkpoint, photo_dir, tmp_path):
    result = engine(
        "run",
        str(photo_dir),
        "--weights",
        str(tiny_checkpoint),
        "--vocab-embeddings",
        "random",
        "--json-progress",
        "--out",
        str(tmp_path / "b"),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    order = [
        "load_images",
        "load_model",
        "vocabulary",
        "encode",
        "memory",
        "render_keyframes",
        "decode_keyframes",
        "postprocess",
        "cameras",
        "write_bundle",
    ]
    from panst3r_engine.bundle.spec import STAGES

    assert order == [s for s in STAGES if s in order]  # the spec's order, which the add-on's progress reads
    firsts = [s for i, s in enumerate(stages) if s not in stages[:i]]
    assert firsts == order
    assert all(0.0 <= e["fraction"] <= 1.0 for e in events if e["event"] == "progress")
    assert events[-1]["event"] == "done" and Path(events[-1]["bundle"]) == tmp_path / "b"
    assert (tmp_path / "b" / "manifest.json").is_file()


@pytest.mark.slow
def test_summary_table_and_failure_exit_code(tiny_checkpoint, photo_dir, tmp_path):
    result = engine(
        "run",
        str(photo_dir),
        "--weights",
        str(tiny_checkpoint),
        "--vocab-embeddings",
        "random",
        "--out",
        str(tmp_path / "ok"),
    )
    assert result.returncode == 0, result.stderr
    assert "segments:" in result.stdout and "stage" in result.stdout and "total" in result.stdout
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    rows = {
        line.split()[0]: float(line.split()[1])
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in manifest["timings"]
    }
    assert rows == {k: round(v, 2) for k, v in manifest["timings"].items()}  # the summary shows the manifest's timings
    (photo_dir / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = engine(
        "run",
        str(photo_dir),
        "--weights",
        str(tiny_checkpoint),
        "--vocab-embeddings",
        "random",
        "--out",
        str(tmp_path / "bad"),
    )
    assert result.returncode == 2
    assert "zz_broken.jpg: not a readable image" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_missing_weights_name_the_file(photo_dir, tmp_path, monkeypatch):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "panst3r_engine",
            "run",
            str(photo_dir),
            "--weights",
            "v1",
            "--vocab-embeddings",
            "random",
            "--out",
            str(tmp_path / "x"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PANST3R_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2
    assert "panst3r_v1_512_5ds.pth" in result.stderr


@pytest.mark.slow
def test_more_keyframes_than_photos_is_said_and_flags_reach_the_bundle(tiny_checkpoint, photo_dir, tmp_path):
    result = engine(
        "run",
        str(photo_dir),
        "--weights",
        str(tiny_checkpoint),
        "--vocab-embeddings",
        "random",
        "--keyframes",
        "999",
        "--seed",
        "3",
        "--max-batch",
        "2",
        "--conf-threshold",
        "2.5",
        "--out",
        str(tmp_path / "b"),
    )
    assert result.returncode == 0, result.stderr
    assert "warning: 999 keyframes were asked for but there are only 3 photos; all 3 are keyframes" in result.stdout
    options = json.loads((tmp_path / "b" / "manifest.json").read_text())["options"]
    assert options["keyframes_used"] == [0, 1, 2]
    assert (options["seed"], options["max_batch"], options["conf_threshold"]) == (3, 2, 2.5)


def test_an_existing_output_folder_names_overwrite(photo_dir, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "panst3r_engine", "run", str(photo_dir), "--out", str(tmp_path / "b")],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PANST3R_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2
    assert "already exists; choose another output folder or pass --overwrite to replace it" in result.stderr


def test_every_option_has_help_and_serve_help_is_plain_text():
    from panst3r_engine.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    weights = next(a for a in commands["weights"]._actions if a.dest == "weights_command").choices
    for parser in (commands["run"], commands["postprocess"], commands["serve"], *weights.values()):
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.dest} has no help"
    result = engine("serve", "--help")
    assert result.returncode == 0 and "python -m panst3r_engine serve" in result.stdout
    assert "``" not in result.stdout and "--token-file token.txt" in result.stdout
