"""``serve --cluster``: jobs on a real local Ray cluster (two CPU workers), behind the same HTTP API.

Ray is started once for the module (2 CPUs, no dashboard); the workers run this checkout's engine code, which
the executor ships to them (``py_modules``). Tests that need Ray skip when it is not installed.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import panst3r_engine.service.executors.ray_cluster as ray_cluster_module
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.executors.transfer import TransferError, pack_bundle, unpack_bundle
from tests.service.conftest import FAST, photo_bytes

PHOTOS = [(f"p{i}.jpg", photo_bytes(seed=10 + i)) for i in range(2)]
OPTIONS = {**FAST, "seed": 7}
SLOW_JOB = 400.0  # Ray workers start (new processes, the engine imported, the model loaded) on a busy machine


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'panst3r-engine[cluster]'")
    from panst3r_engine.service.executors.ray_cluster import engine_runtime_env

    ray.init(num_cpus=2, runtime_env=engine_runtime_env(), include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def cluster_engine(ray_cluster, start_engine):
    return start_engine(CLUSTER="ray", CLUSTER_CPU_WORKERS=2)


def bundle_of(engine, job_id: str) -> dict[str, bytes]:
    response = engine.get(f"/v1/jobs/{job_id}/bundle")
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def comparable(files: dict[str, bytes]) -> tuple[dict, dict, dict]:
    """Manifest without its clock readings, point arrays, and the other files byte for byte."""
    manifest = json.loads(files["manifest.json"])
    manifest.pop("timings", None), manifest.pop("created", None)  # when it ran, how long it took
    with np.load(io.BytesIO(files["points.npz"])) as npz:
        points = {k: npz[k] for k in npz.files}
    others = {k: v for k, v in files.items() if k not in ("manifest.json", "points.npz")}
    return manifest, points, others


def wait_running(engine, job_id: str, timeout: float = SLOW_JOB) -> dict:
    """The job once it runs and has reported a stage (progress came from the worker)."""
    deadline = time.monotonic() + timeout
    while True:
        job = engine.get(f"/v1/jobs/{job_id}").json()
        if job["stage"] is not None or job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


@pytest.mark.slow
def test_two_jobs_run_on_two_workers_and_equal_the_in_process_result(start_engine, ray_cluster, tmp_path):
    local = start_engine(JOBS_DIR=tmp_path / "local")
    reference = local.wait(local.submit(PHOTOS, OPTIONS).json()["id"], timeout=SLOW_JOB)
    assert reference["state"] == "done", reference
    expected = comparable(bundle_of(local, reference["id"]))

    engine = start_engine(CLUSTER="ray", CLUSTER_CPU_WORKERS=2)
    health = engine.get("/v1/health").json()
    assert (health["executor"], health["workers"], health["busy_workers"]) == ("ray", 2, 0)
    ids = [engine.submit(PHOTOS, OPTIONS).json()["id"] for _ in range(2)]
    busiest, deadline = 0, time.monotonic() + SLOW_JOB
    while time.monotonic() < deadline:
        states = [engine.get(f"/v1/jobs/{i}").json()["state"] for i in ids]
        busiest = max(busiest, engine.get("/v1/health").json()["busy_workers"])
        if all(s in ("done", "failed", "cancelled") for s in states):
            break
        time.sleep(0.05)
    jobs = [engine.wait(i, timeout=10) for i in ids]
    assert [j["state"] for j in jobs] == ["done", "done"], jobs
    assert busiest == 2  # both jobs ran at the same time, so on the two different workers
    assert max(j["started"] for j in jobs) < min(j["finished"] for j in jobs)
    for job in jobs:
        manifest, points, others = comparable(bundle_of(engine, job["id"]))
        assert manifest == expected[0]
        assert others == expected[2]
        assert points.keys() == expected[1].keys()
        for key, value in points.items():
            np.testing.assert_array_equal(value, expected[1][key], err_msg=key)
    assert engine.get("/v1/health").json()["model"] == "tiny_v2.pth"

    @ray_cluster.remote(num_cpus=0)
    def worker_source() -> str:  # what a Ray worker imports: this checkout's code, shipped by Ray
        import panst3r_engine.service.executors.ray_cluster as module

        return Path(module.__file__).read_text("utf-8")

    assert ray_cluster.get(worker_source.remote(), timeout=120) == Path(ray_cluster_module.__file__).read_text("utf-8")


@pytest.mark.slow
def test_cancel_reaches_the_running_worker_and_the_add_on_client_runs_the_next_job(cluster_engine, tmp_path):
    job_id = cluster_engine.submit(PHOTOS * 2, OPTIONS).json()["id"]
    running = wait_running(cluster_engine, job_id)
    assert running["state"] == "running", running
    response = cluster_engine.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 202, response.text
    job = cluster_engine.wait(job_id, timeout=120)
    assert job["state"] == "cancelled", job
    health = cluster_engine.get("/v1/health").json()
    assert health["busy_workers"] == 0
    add_on_client_runs_a_job(cluster_engine, tmp_path)


def add_on_client_runs_a_job(engine, folder: Path) -> None:
    """The add-on's own client (Remote: just the front end's URL and token) runs a job to an imported bundle."""
    from blender_addon.bundle.read import read_bundle
    from blender_addon.client.engine import EngineClient
    from tests.service.conftest import TOKEN

    client = EngineClient(engine.url, TOKEN, timeout=30)
    assert client.health()["executor"] == "ray"
    photos = []
    for name, data in PHOTOS:
        (folder / name).write_bytes(data)
        photos.append(folder / name)
    job_id, deadline = client.submit(photos, OPTIONS), time.monotonic() + SLOW_JOB
    while (status := client.status(job_id))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["state"] == "done", status
    bundle = read_bundle(client.download_bundle(job_id, folder / "result"))
    assert len(bundle.images) == len(PHOTOS)


@pytest.mark.slow
def test_a_killed_worker_fails_its_job_and_the_next_job_runs(cluster_engine, ray_cluster, start_engine, jobs_dir):
    executor = cluster_engine.engine.jobs.executor
    job_id = cluster_engine.submit(PHOTOS * 2, OPTIONS).json()["id"]
    assert wait_running(cluster_engine, job_id)["state"] == "running"
    for slot in range(executor.slots):  # whichever worker has the job (and the idle one, if it is up yet)
        if executor.actor(slot) is not None:
            ray_cluster.kill(executor.actor(slot))
    job = cluster_engine.wait(job_id, timeout=120)
    assert job["state"] == "failed" and job["error"]["code"] == "worker_lost", job
    assert "submit the photos again" in job["error"]["message"]
    after = cluster_engine.wait(cluster_engine.submit(PHOTOS[:1], OPTIONS).json()["id"], timeout=SLOW_JOB)
    assert after["state"] == "done", after  # a fresh worker replaced the killed one

    cluster_engine.engine.stop(timeout=30)  # the front end restarts: the records stay, the bundle still downloads
    restarted = start_engine()
    listed = {j["id"]: j["state"] for j in restarted.get("/v1/jobs").json()["jobs"]}
    assert listed == {job_id: "failed", after["id"]: "done"}
    assert "manifest.json" in bundle_of(restarted, after["id"])


def test_without_ray_the_cluster_option_says_how_to_install_it(monkeypatch):
    from panst3r_engine.service.executors.ray_cluster import ClusterError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an engine without the extra sees
    with pytest.raises(ClusterError, match=r"pip install 'panst3r-engine\[cluster\]'"):
        import_ray()


def test_a_bad_cluster_address_is_one_sentence():
    ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'panst3r-engine[cluster]'")
    from panst3r_engine.service.executors.ray_cluster import ClusterError, connect

    with pytest.raises(ClusterError, match=r"is not ray, auto or ray://HOST:PORT"):
        connect(ray, "http://head:6379")


def test_cpu_workers_without_cluster_is_refused(capsys):
    from panst3r_engine.cli import main

    assert main(["serve", "--cluster-cpu-workers", "2"]) != 0
    assert "--cluster-cpu-workers needs --cluster" in capsys.readouterr().err


def _zip(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        _zip({"../outside.json": b"{}"}),
        _zip({"/abs.json": b"{}"}),
        _zip({"a\\b.json": b"{}"}),
        _zip({"manifest.json": b"{}"}, link="points.npz"),
        b"not a zip",
    ],
    ids=["dotdot", "absolute", "backslash", "symlink", "garbage"],
)
def test_a_workers_archive_with_unsafe_members_is_refused(tmp_path, archive):
    with pytest.raises(TransferError):
        unpack_bundle(archive, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "outside.json").exists()


def test_an_archive_that_is_no_bundle_is_refused_and_removed(tmp_path):
    from panst3r_engine.bundle.checks import BundleError

    with pytest.raises(BundleError):
        unpack_bundle(_zip({"manifest.json": b"{}"}), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_bytes(b"x")
    assert zipfile.ZipFile(io.BytesIO(pack_bundle(tmp_path / "src"))).namelist() == ["x.txt"]


def test_a_workers_job_uses_the_class_files_that_travelled_with_it(tiny_checkpoint, tmp_path):
    """``eval run --cluster --vocab-embeddings FILE``: the file travels with the job (the workers may not share
    this disk) and the worker's job uses it. The worker class runs here without Ray (the same code)."""
    from panst3r_engine.pipeline import images
    from panst3r_engine.pipeline.video import video_limits
    from panst3r_engine.service.executors.ray_cluster import ClusterWorker
    from panst3r_engine.service.executors.transfer import unpack_bundle
    from panst3r_engine.vocab.embeddings import random_embeddings, save_embeddings

    worker = ClusterWorker(str(tiny_checkpoint), "cpu", images.MAX_PIXELS, video_limits())
    worker.ready()
    dim = worker.models.get(str(tiny_checkpoint), "cpu").model.text_dim
    names = ["wall", "chair"]
    save_embeddings(tmp_path / "good.npz", names, random_embeddings(names, dim, seed=3).vectors)
    save_embeddings(tmp_path / "bad.npz", names, random_embeddings(names, dim + 1, seed=3).vectors)
    options = JobOptions(
        weights="ignored: the worker's",
        vocab="ignored",
        vocab_embeddings="ignored",
        postprocess="standard_v1",
        resize="none",
    )
    photo = [("small.jpg", photo_bytes(width=96, height=64, seed=4))]  # used as it is: a quick job
    vocab = b"wall;stuff\nchair\n"

    done = worker.run("a", photo, options, vocab, (tmp_path / "good.npz").read_bytes())
    assert done["state"] == "done", done
    unpack_bundle(done["bundle"], tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == names

    failed = worker.run("b", photo, options, vocab, (tmp_path / "bad.npz").read_bytes())
    assert failed["state"] == "failed" and str(dim) in failed["error"]["message"], failed
