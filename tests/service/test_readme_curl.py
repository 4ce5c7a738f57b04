"""The README's ``curl`` examples, taken from README.md and run with real curl against a real engine process.

Only the port, the engine's weights/device/jobs folder and the photo folder are substituted, so the README
cannot drift from what the service answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from panst3r_engine.vocab.embeddings import cache_embeddings, random_embeddings
from panst3r_engine.vocab.vocabularies import load_vocabulary

pytestmark = pytest.mark.slow  # minutes of real jobs: run by CI with -m slow

ROOT = Path(__file__).resolve().parents[2]


def service_blocks() -> tuple[str, str]:
    """The two bash blocks of the README's 'Engine service' section: starting the engine, and the curl calls."""
    section = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("\n## Engine service\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    start = [b for b in blocks if "panst3r_engine serve" in b and "--token-file" in b]
    calls = [b for b in blocks if "curl " in b]
    assert len(start) == 1 and len(calls) == 1, "the README's service section must keep one start and one curl block"
    return start[0], calls[0]


def documented_answers(calls: str) -> list[dict]:
    """The answers the README shows after ``curl ... # {...}``, as {key: value} ("..." where elided)."""
    pairs = r'"(\w+)":("[^"]*"|true|false|null|-?\d+(?:\.\d+)?)'
    return [
        {key: json.loads(value) for key, value in re.findall(pairs, comment)}
        for comment in re.findall(r"^curl [^\n]*# (\{[^\n]*)$", calls, re.M)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_blocks_are_complete():
    start, calls = service_blocks()
    assert "URL=http://127.0.0.1:8765" in start and "--port 8765" in start
    for call in ("/v1/health", '/v1/jobs"', '/v1/jobs/$JOB"', "/bundle", "-X DELETE", "/v1/shutdown"):
        assert call in calls, call
    assert calls.count('-H "$AUTH"') == calls.count("curl -sS")  # every request carries the token header


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)")
def test_readme_curl_examples_against_a_real_engine(tmp_path, tiny_checkpoint):
    start, calls = service_blocks()
    port = free_port()
    start = start.replace("8765", str(port)).replace(
        "panst3r_engine serve ",
        f"panst3r_engine serve --weights {tiny_checkpoint} --device cpu --jobs-dir {tmp_path / 'jobs'} ",
    )
    calls = calls.replace("examples/room/", f"{ROOT}/examples/room/")
    wait_for_engine = 'for i in $(seq 600); do curl -s -o /dev/null "$URL/v1/health" && break; sleep 0.1; done\n'
    script = f'set -eu\n{start}\n{wait_for_engine}{calls}\nwait $!\necho "{{\\"engine_exit\\": $?}}"\n'

    home = tmp_path / "home"  # the class embeddings a first online run would have cached
    vocab = load_vocabulary("scannetpp")
    cache_embeddings(random_embeddings(list(vocab.names), 768), cache_dir=home)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PANST3R_HOME": str(home),
        "NO_PROXY": "127.0.0.1,localhost",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 7, result.stdout
    listening, health, job, cancelled, purged, shutdown, exit_status = lines
    assert listening["event"] == "listening" and listening["port"] == port
    assert health["api_version"] == 1 and health["device"] == "cpu" and isinstance(health["model_loaded"], bool)
    assert job["state"] == "done", job
    assert cancelled["state"] == "cancelled" or (cancelled["state"], cancelled["message"]) == ("running", "cancelling")
    assert purged == {"id": job["id"], "purged": True, "state": "done"}
    assert shutdown == {"state": "shutting_down"} and exit_status == {"engine_exit": 0}
    documented = documented_answers(calls)
    assert len(documented) == 4
    for doc, answer in zip(documented, (health, job, purged, shutdown)):
        for key, value in doc.items():  # every key the README shows is in the answer, with the value shown
            assert key in answer and (value == "..." or answer[key] == value), (key, value, answer)

    with zipfile.ZipFile(work / f"{job['id']}.zip") as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
    assert [im["file"] for im in manifest["images"]] == ["view_0.jpg", "view_1.jpg"]
    assert not (tmp_path / "jobs" / job["id"]).exists()  # purged
