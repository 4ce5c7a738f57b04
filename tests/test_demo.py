"""The README's main-job command from a clean state: a checkpoint placed in the cache, no network."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.model.checkpoints import write_random_checkpoint
from panst3r_engine.vocab.embeddings import cache_embeddings, random_embeddings
from panst3r_engine.vocab.vocabularies import load_vocabulary
from panst3r_engine.weights.registry import REGISTRY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "examples" / "room").is_dir(), reason="examples/room photos are not in this checkout")
def test_demo_runs_on_the_example_photos(tmp_path):
    home = tmp_path / "home"
    write_random_checkpoint(home / "weights" / "panst3r_v2_512_5ds.pth", "v2", "tiny")
    vocab = load_vocabulary("scannetpp")  # embeddings the user would have cached on a first, online run
    cache_embeddings(random_embeddings(list(vocab.names), 768), cache_dir=home)
    env = {
        **os.environ,
        "PANST3R_HOME": str(home),
        "PANST3R_OFFLINE": "1",
        "VIRTUAL_ENV": sys.prefix,
        "PANST3R_DEMO_OUT": str(tmp_path / "out" / "room"),
    }
    bash = shutil.which("bash")
    result = subprocess.run(
        [bash, "scripts/demo.sh", "--keyframes", "3", "--conf-threshold", "1.0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bundle = read_bundle(tmp_path / "out" / "room")
    photos = sorted(p.name for p in (REPO / "examples" / "room").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert [im["file"] for im in bundle.manifest["images"]] == photos
    assert len(bundle.manifest["cameras"]) == len(photos)
    assert "segments" in result.stdout and "total" in result.stdout


def _demo_without_weights(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PANST3R_ACCEPT_LICENSE", "PANST3R_WEIGHTS_BASE_URL")}
    env.update(
        {
            "PANST3R_HOME": str(tmp_path / "empty"),
            "VIRTUAL_ENV": sys.prefix,
            "PANST3R_DEMO_OUT": str(tmp_path / "out"),
            **extra,
        }
    )
    return subprocess.run(
        [shutil.which("bash"), "scripts/demo.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _ends_with_the_place_by_hand_sentence(result: subprocess.CompletedProcess, tmp_path: Path, url: str) -> None:
    """Exit 3, and the last line names the file, where to get it and where to put it."""
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    target = tmp_path / "empty" / "weights" / "panst3r_v2_512_5ds.pth"
    assert f"download panst3r_v2_512_5ds.pth from {url} and place it at {target}" in last, result.stderr
    assert not (tmp_path / "out").exists() and not target.exists()


def test_demo_offline_says_what_to_place_where(tmp_path):
    result = _demo_without_weights(tmp_path, PANST3R_OFFLINE="1", PANST3R_ACCEPT_LICENSE="1")
    _ends_with_the_place_by_hand_sentence(result, tmp_path, REGISTRY["panst3r-v2-512"].url)


def test_demo_without_a_terminal_asks_for_acceptance_and_downloads_nothing(tmp_path):
    with RecordingServer() as server:
        result = _demo_without_weights(tmp_path, PANST3R_WEIGHTS_BASE_URL=server.url)
    assert server.paths == []  # the licence was not accepted: no download attempted
    assert "PANST3R_ACCEPT_LICENSE=1" in result.stderr and "error:" not in result.stderr
    _ends_with_the_place_by_hand_sentence(result, tmp_path, f"{server.url}/panst3r_v2_512_5ds.pth")


def test_demo_with_a_failed_download_ends_with_the_place_by_hand_sentence(tmp_path):
    with RecordingServer() as server:  # answers 404 to everything: the file is not on this mirror
        result = _demo_without_weights(tmp_path, PANST3R_ACCEPT_LICENSE="1", PANST3R_WEIGHTS_BASE_URL=server.url)
    assert server.paths == ["/panst3r_v2_512_5ds.pth"] and "HTTP 404" in result.stderr
    _ends_with_the_place_by_hand_sentence(result, tmp_path, f"{server.url}/panst3r_v2_512_5ds.pth")


class RecordingServer:
    """A real HTTP server on 127.0.0.1 that answers 404 and records the paths asked for."""

    def __init__(self) -> None:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.paths = paths
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> RecordingServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _copy_scripts(tmp_path: Path, venv: Path) -> Path:
    """A checkout with this repository's scripts and ``.venv`` pointing at ``venv``."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts")
    (repo / ".venv").symlink_to(venv, target_is_directory=True)
    return repo


TEST_MODULES = (
    "panst3r_engine",
    "flask",
    "gsplat",
    "scipy",
    "pytest",
    "transformers",
    "sentencepiece",
    "google.protobuf",
    "bpy",
)


@pytest.mark.slow
def test_test_command_with_everything_installed_installs_nothing(tmp_path):
    missing = [m for m in TEST_MODULES if importlib.util.find_spec(m) is None]
    if missing:  # the scripts would install into this (shared) environment
        pytest.skip(f"this environment lacks {', '.join(missing)}, so the scripts would install into it")
    repo = _copy_scripts(tmp_path, Path(sys.prefix))
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run(
        [shutil.which("bash"), "scripts/test.sh", "--version"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "environment ready" in result.stdout and "| bpy 5.0" in result.stdout
    assert "pytest" in result.stdout + result.stderr and "error" not in result.stderr


def test_test_command_refuses_an_environment_without_the_test_dependencies(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    env = {**os.environ, "VIRTUAL_ENV": str(bare)}
    result = subprocess.run(
        [shutil.which("bash"), "scripts/test.sh", "--version"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: the tests need pytest transformers sentencepiece")
    assert "bpy" in message and f"{bare}/bin/python -m pip install -e '.[test]' bpy==5.0.1" in message
    env["PANST3R_WITH_BLENDER"] = "0"
    result = subprocess.run(
        [shutil.which("bash"), "scripts/test.sh", "--version"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert (
        "need pytest transformers sentencepiece google.protobuf gsplat flask scipy pycolmap ray, missing"
        in result.stderr
    )
