"""The HTTP API's shape: health, JSON errors for every failure, routes on jobs an earlier engine left."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from panst3r_engine import __version__
from tests.service.conftest import FAST, make_record, photo_bytes

CAMERA = {"K": [[100, 0, 16], [0, 100, 12], [0, 0, 1]], "cam_to_world": np.eye(4).tolist(), "width": 32, "height": 24}


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["error"]


def test_health(engine):
    health = engine.get("/v1/health").json()
    assert health == {
        "version": __version__,
        "api_version": 1,
        "device": "cpu",
        "model_loaded": False,
        "model": None,
        "queue_length": 0,
        "running": None,
        "executor": "local",
        "workers": 1,
        "busy_workers": 0,
    }


def test_unknown_job_route_and_method_are_json(engine):
    assert error(engine.get("/v1/jobs/20250101-000000-abcdef"), 404)["code"] == "unknown_job"
    assert error(engine.delete("/v1/jobs/../../etc"), 404)["code"] in ("unknown_job", "not_found")
    assert error(engine.get("/v2/health"), 404)["code"] == "not_found"
    assert error(engine.post("/v1/health"), 405)["code"] == "method_not_allowed"


def test_jobs_left_by_an_earlier_engine(start_engine, jobs_dir):
    done = make_record(jobs_dir, "done", files=("manifest.json", "points.npz"))
    failed = make_record(jobs_dir, "failed")
    engine = start_engine()
    assert [j["id"] for j in engine.get("/v1/jobs").json()["jobs"]] == [done.id, failed.id]  # oldest first
    assert error(engine.get(f"/v1/jobs/{failed.id}/bundle"), 409)["code"] == "not_done"
    assert error(engine.post(f"/v1/jobs/{failed.id}/render", json=CAMERA), 409)["code"] == "not_done"
    assert engine.get(f"/v1/jobs/{done.id}/bundle").status_code == 200
    assert engine.delete(f"/v1/jobs/{failed.id}?purge=1").status_code == 200
    assert not failed.folder.exists() and done.folder.exists()


def test_render_needs_splats(start_engine, jobs_dir, monkeypatch):
    plain = make_record(jobs_dir, "done", files=("manifest.json",))
    splatted = make_record(jobs_dir, "done", files=("manifest.json", "splats.ply"))
    engine = start_engine()
    assert error(engine.post(f"/v1/jobs/{plain.id}/render", json=CAMERA), 409)["code"] == "no_splats"
    monkeypatch.setitem(sys.modules, "panst3r_engine.splats", None)  # the module is missing: import fails
    assert error(engine.post(f"/v1/jobs/{splatted.id}/render", json=CAMERA), 501)["code"] == "splats_unavailable"
    response = engine.submit([("a.jpg", photo_bytes())], {**FAST, "splats": True})
    assert error(response, 501)["code"] == "splats_unavailable"
    assert engine.get("/v1/jobs").json()["jobs"][-1]["id"] == splatted.id  # no job was queued


@pytest.mark.parametrize(
    "body, words",
    [
        ({**CAMERA, "K": [[1, 0, 0], [0, 1, 0]]}, "K must be a 3x3"),
        ({**CAMERA, "cam_to_world": np.eye(3).tolist()}, "cam_to_world must be a 4x4"),
        ({**CAMERA, "width": 0}, "width must be an integer"),
        ({**CAMERA, "height": 10.5}, "height must be an integer"),
        ({**CAMERA, "fov": 60}, "unknown render field 'fov'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_render_requests_are_400(start_engine, jobs_dir, body, words):
    job = make_record(jobs_dir, "done", files=("splats.ply",))
    engine = start_engine()
    assert words in error(engine.post(f"/v1/jobs/{job.id}/render", json=body), 400)["message"]


def test_render_without_json_is_400(start_engine, jobs_dir):
    job = make_record(jobs_dir, "done", files=("splats.ply",))
    engine = start_engine()
    assert error(engine.post(f"/v1/jobs/{job.id}/render", data="K=1"), 400)["code"] == "bad_request"


def test_shutdown_endpoint_stops_the_server(start_engine):
    engine = start_engine()
    response = engine.post("/v1/shutdown")
    assert response.status_code == 202 and response.json() == {"state": "shutting_down"}
    engine.thread.join(10)
    assert not engine.thread.is_alive()
