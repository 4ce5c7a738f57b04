"""Render requests are bounded: size and Gaussians checked first, one at a time on the job worker, with a
bounded wait, and dropped when the client hangs up."""

from __future__ import annotations

import json
import socket
import threading
import time
import types

import numpy as np
import pytest
import requests

from tests.service.conftest import FAST, TOKEN, photo_bytes

pytestmark = pytest.mark.slow  # minutes of real jobs: run by CI with -m slow


def camera(width: int = 64, height: int = 48) -> dict:
    K = [[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]]
    return {"K": K, "cam_to_world": np.eye(4).tolist(), "width": width, "height": height}


@pytest.fixture
def splat_engine(start_engine, jobs_dir, monkeypatch):
    """(engine, done job id, probe): a real job with splats whose splats.ply is then swapped for 100 Gaussians;
    the real renderer is wrapped so renders record their thread and can be held on ``probe.gate``."""
    import panst3r_engine.splats as splats
    from panst3r_engine.splats import init_from_points, write_splats_ply

    real = splats.render_view
    probe = types.SimpleNamespace(gate=threading.Event(), threads=[])
    probe.gate.set()

    def render_view(bundle, K, cam_to_world, width, height):
        probe.threads.append(threading.current_thread().name)
        assert probe.gate.wait(20)
        return real(bundle, K, cam_to_world, width, height)

    monkeypatch.setattr(splats, "render_view", render_view)
    engine = start_engine(
        RENDER_MAX_PIXELS=100 * 100, RENDER_MAX_GAUSSIANS=1000, RENDER_MAX_WORK=64 * 48 * 600, RENDER_WAIT_S=1.0
    )
    options = {**FAST, "splats": True, "splat_steps": 5, "conf_threshold": 1.0}
    job = engine.submit([("a.jpg", photo_bytes())], options).json()
    assert engine.wait(job["id"])["state"] == "done"
    rng = np.random.default_rng(0)
    small = init_from_points(
        rng.normal(0, 0.3, (100, 3)) + [0, 0, 3],
        rng.integers(0, 255, (100, 3), dtype=np.uint8),
        np.ones(100, np.int64),
        {1: 0},
        voxel=None,
    )
    write_splats_ply(small, jobs_dir / job["id"] / "bundle" / "splats.ply")
    return engine, job["id"], probe


def test_render_size_and_splats_are_bounded_and_run_on_the_worker(splat_engine, jobs_dir):
    engine, job_id, module = splat_engine
    path = f"/v1/jobs/{job_id}/render"
    assert engine.post(path, json=camera()).status_code == 200
    assert module.threads == ["panst3r-worker"]  # the device's one queue, not the request thread
    too_big = engine.post(path, json=camera(200, 100))
    assert (
        too_big.status_code == 400
        and "more than the 10000 pixels this engine renders in one call; lower the render resolution"
        in too_big.json()["error"]["message"]
    )
    assert engine.post(path, json=camera(8192, 8192)).status_code == 400
    ply = jobs_dir / job_id / "bundle" / "splats.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5000\nend_header\n")
    crowded = engine.post(path, json=camera())
    assert crowded.status_code == 422 and crowded.json()["error"]["code"] == "too_many_splats"
    assert "5000 Gaussian splats, more than the 1000" in crowded.json()["error"]["message"]
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 800\nend_header\n")
    costly = engine.post(path, json=camera())  # 64x48 x 800 Gaussians > the work bound of 64x48 x 600
    assert costly.status_code == 400 and "lower the render resolution to about 86%" in costly.json()["error"]["message"]
    assert module.threads == ["panst3r-worker"]  # refused before any rendering


def test_renders_wait_a_bounded_time_and_are_dropped_when_the_client_leaves(splat_engine):
    engine, job_id, module = splat_engine
    path = f"/v1/jobs/{job_id}/render"
    module.gate.clear()  # the first render holds the worker
    first: list = []
    holder = threading.Thread(target=lambda: first.append(engine.post(path, json=camera())), daemon=True)
    holder.start()
    deadline = time.monotonic() + 10
    while not module.threads and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    busy = requests.post(engine.url + path, json=camera(), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=8)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy", busy.text
    assert time.monotonic() - started < 4 and len(module.threads) == 1

    engine.engine.app.config["RENDER_WAIT_S"] = 30.0  # from now on only the hang-up can drop a render
    body = json.dumps(camera()).encode()
    port = engine.engine.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a client that hangs up
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
    time.sleep(1.0)  # the service notices within its 0.2 s poll
    module.gate.set()
    holder.join(20)
    assert first and first[0].status_code == 200
    time.sleep(0.5)
    assert len(module.threads) == 1  # the abandoned render never ran
