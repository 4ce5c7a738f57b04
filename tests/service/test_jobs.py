"""Jobs on a real engine: queueing, progress, cancellation, failures, persistence and clean-up."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.jobs import JobManager
from tests.service.conftest import FAST, make_record, photo_bytes


def submit_together(engine, requests_: list[tuple[list, dict]]) -> list:
    """Submit from several threads at the same moment, like several add-on instances."""
    barrier, responses = threading.Barrier(len(requests_)), [None] * len(requests_)

    def send(i: int, photos: list, options: dict) -> None:
        barrier.wait()
        responses[i] = engine.submit(photos, options)

    threads = [threading.Thread(target=send, args=(i, *r)) for i, r in enumerate(requests_)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return responses


@pytest.mark.slow
def test_two_clients_both_finish_and_bundles_download(engine, jobs_dir):
    assert engine.get("/v1/health").json()["model_loaded"] is False
    own = ["wall", "floor;stuff", "chair"]
    responses = submit_together(
        engine,
        [
            ([("../../outside.jpg", photo_bytes(seed=1))], {**FAST, "vocab": own}),
            (
                [("b.png", photo_bytes(fmt="PNG", seed=2))],
                {**FAST, "splats": True, "splat_steps": 5, "conf_threshold": 1.0},
            ),
        ],
    )
    assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert {b["state"] for b in bodies} == {"queued"} and sorted(b["position"] for b in bodies) == [0, 1]
    first, second = (engine.wait(b["id"]) for b in bodies)
    assert first["state"] == second["state"] == "done", (first, second)
    assert first["num_images"] == 1 and isinstance(first["segments"], int) and first["fraction"] == 1.0
    assert (first["has_splats"], second["has_splats"]) == (False, True)
    assert first["started"] >= first["created"] and first["finished"] >= first["started"]
    health = engine.get("/v1/health").json()
    assert health["model_loaded"] is True and health["model"] == "tiny_v2.pth" and health["running"] is None
    assert not (jobs_dir.parent / "outside.jpg").exists()

    manifest = check_bundle_zip(engine, first["id"])
    assert [im["file"] for im in manifest["images"]] == ["outside.jpg"]
    assert [c["name"] for c in manifest["classes"]] == ["wall", "floor", "chair"]
    record = json.loads((jobs_dir / first["id"] / "job.json").read_text())
    assert record["state"] == "done" and record["options"]["vocab"] == own
    assert not (jobs_dir / first["id"] / "input").exists()  # the bundle keeps its own copy of the photos

    splat_manifest = check_bundle_zip(engine, second["id"])
    assert splat_manifest["splats"]["steps"] == 5 and splat_manifest["splats"]["count"] > 0
    check_render(engine, second["id"], {s["id"] for s in splat_manifest["segments"]})
    listed = engine.get("/v1/jobs").json()["jobs"]
    assert {j["id"] for j in listed} == {first["id"], second["id"]}


def check_bundle_zip(engine, job_id: str) -> dict:
    response = engine.get(f"/v1/jobs/{job_id}/bundle", stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = archive.namelist()
    assert "manifest.json" in names and "points.npz" in names and archive.testzip() is None
    assert any(n.startswith("panoptic/") and n.endswith(".png") for n in names)
    with archive.open("points.npz") as f:
        assert set(np.load(io.BytesIO(f.read()))) >= {"xyz", "rgb", "conf", "segment", "view", "pixel"}
    return json.loads(archive.read("manifest.json"))


def check_render(engine, job_id: str, segment_ids: set[int]) -> None:
    """A real render of the job's splats: the right size, and labels that are the bundle's segments (0: void)."""
    camera = {
        "K": [[300, 0, 40], [0, 300, 30], [0, 0, 1]],
        "cam_to_world": np.eye(4).tolist(),
        "width": 80,
        "height": 60,
    }
    response = engine.post(f"/v1/jobs/{job_id}/render", json=camera)
    assert response.status_code == 200, response.text
    body = response.json()
    import base64

    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["rgb_png"]))))
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["labels_png"])))).astype(np.int64)
    assert rgb.shape == (60, 80, 3) and (body["width"], body["height"]) == (80, 60)
    ids = labels[..., 0] + 256 * labels[..., 1] + 65536 * labels[..., 2]
    assert set(np.unique(ids).tolist()) <= segment_ids | {0} and rgb.dtype == np.uint8


def test_cancel_queued_then_running(engine, jobs_dir):
    photos = [(f"p{i}.jpg", photo_bytes(seed=i)) for i in range(4)]
    first = engine.submit(photos, FAST).json()
    second = engine.submit(photos[:1], FAST).json()
    assert second["position"] == 1
    response = engine.delete(f"/v1/jobs/{second['id']}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert engine.get(f"/v1/jobs/{second['id']}").json()["position"] is None

    running = engine.wait(first["id"], states=("running", "done", "failed", "cancelled"))
    assert running["state"] == "running" and running["started"] is not None
    assert engine.get("/v1/health").json()["running"] == first["id"]
    assert engine.delete(f"/v1/jobs/{first['id']}").status_code == 202
    final = engine.wait(first["id"])
    assert final["state"] == "cancelled" and final["error"] is None
    assert not (jobs_dir / first["id"] / "bundle").exists()
    assert [p.name for p in (jobs_dir / first["id"]).iterdir()] == ["job.json"]
    assert json.loads((jobs_dir / first["id"] / "job.json").read_text())["state"] == "cancelled"

    response = engine.delete(f"/v1/jobs/{first['id']}")
    assert response.status_code == 409 and "purge=1" in response.json()["error"]["message"]
    assert engine.delete(f"/v1/jobs/{first['id']}?purge=1").json()["purged"] is True
    assert not (jobs_dir / first["id"]).exists()
    assert engine.get(f"/v1/jobs/{first['id']}").status_code == 404


def test_failure_inside_the_pipeline_ends_failed(engine, jobs_dir):
    tiny = photo_bytes(20, 20, fmt="PNG")  # a valid image, too small for the network
    job = engine.submit([("ok.jpg", photo_bytes()), ("thumb.png", tiny)], FAST).json()
    final = engine.wait(job["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "bad_image"
    assert "thumb.png: 20x20 pixels is too small" in final["error"]["message"]
    assert final["message"] == final["error"]["message"]
    assert sorted(p.name for p in (jobs_dir / job["id"]).iterdir()) == ["job.json"]
    response = engine.get(f"/v1/jobs/{job['id']}/bundle")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_done"


# ---------------------------------------------------------------- the manager alone (no model needed)
def test_cleanup_keeps_the_newest_and_drops_expired(jobs_dir):
    now = time.time()
    ages = [0.1, 0.2, 0.3, 30.0]
    jobs = [make_record(jobs_dir, "done", age, now) for age in ages]
    manager = JobManager(jobs_dir, JobOptions(), keep_jobs=2, job_ttl_hours=24)
    manager.cleanup()
    assert [j["id"] for j in manager.list_jobs()] == [jobs[1].id, jobs[0].id]
    assert sorted(p.name for p in jobs_dir.iterdir()) == sorted([jobs[0].id, jobs[1].id])


def test_shutdown_refuses_new_jobs(engine, jobs_dir):
    engine.engine.jobs.stop_accepting()
    response = engine.submit([("a.jpg", photo_bytes())], FAST)
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"
    assert list(jobs_dir.iterdir()) == []


def test_start_tidies_what_an_earlier_engine_left(jobs_dir):
    done = make_record(jobs_dir, "done", files=("manifest.json",))
    crashed = make_record(jobs_dir, "running", files=("manifest.json",))
    for job in (done, crashed):
        (job.folder / "input").mkdir()
        (job.folder / ".bundle.tmp-abc123").mkdir()
    manager = JobManager(jobs_dir, JobOptions()).start()
    try:
        assert sorted(p.name for p in done.folder.iterdir()) == ["bundle", "job.json"]
        assert sorted(p.name for p in crashed.folder.iterdir()) == ["job.json"]
        assert manager.view(crashed.id)["error"]["code"] == "engine_stopped"
    finally:
        manager.shutdown(timeout=5)
