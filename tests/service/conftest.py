"""Fixtures for service tests: a tiny random checkpoint, small photos, and real engines on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from panst3r_engine.model.checkpoints import write_random_checkpoint
from panst3r_engine.model.loading import ModelCache
from panst3r_engine.service.options import ClientOptions
from panst3r_engine.service.records import Job, new_job_id, save_record

TOKEN = "service-test-token-0123456789"
FAST = {"vocab_embeddings": "random", "postprocess": "standard_v1"}  # no text model; the quickest merging
FINISHED = ("done", "failed", "cancelled")


def photo_bytes(width: int = 320, height: int = 240, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A small photo-like image: gradients plus coloured blocks, different for every seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, rng.integers(0, 255))], axis=-1
    ).astype(np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, max(width // 2, 1)), rng.integers(0, max(height // 2, 1))
        img[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format=fmt)
    return buffer.getvalue()


class Client:
    """``requests`` against one engine, with its token; a stand-in for the add-on's client."""

    def __init__(self, url: str, token: str = TOKEN) -> None:
        self.url, self.session = url, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.engine = self.thread = None  # the EngineServer and its thread, when it runs in this process

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.session.delete(self.url + path, timeout=30, **kw)

    def submit(self, photos: list[tuple[str, bytes]], options: dict | None = None) -> requests.Response:
        files = [("images", (name, data, "application/octet-stream")) for name, data in photos]
        if options is not None:
            files.append(("options", (None, json.dumps(options))))
        return self.post("/v1/jobs", files=files)

    def wait(self, job_id: str, states=FINISHED, timeout: float = 90.0) -> dict:
        """Poll the job until its state is one of ``states``."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout} s: {job}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_v2.pth", "v2", "tiny", seed=5)


@pytest.fixture(scope="session")
def models() -> ModelCache:
    """One model cache for every in-process engine, so the tiny model loads once."""
    return ModelCache()


@pytest.fixture
def jobs_dir(tmp_path) -> Path:
    return tmp_path / "jobs"


@pytest.fixture
def start_engine(jobs_dir, tiny_checkpoint, models):
    """Start real engines (the service's waitress server on 127.0.0.1, a free port) in this process."""
    from panst3r_engine.service.server import EngineServer

    running = []

    def start(server_kwargs: dict | None = None, **config) -> Client:
        config = {
            "TOKEN": TOKEN,
            "JOBS_DIR": jobs_dir,
            "WEIGHTS": str(tiny_checkpoint),
            "DEVICE": "cpu",
            "MODELS": models,
            **config,
        }
        engine = EngineServer("127.0.0.1", 0, config, **(server_kwargs or {}))
        thread = threading.Thread(target=engine.serve_forever, daemon=True)
        thread.start()
        running.append((engine, thread))
        client = Client(engine.url)
        client.engine, client.thread = engine, thread
        return client

    yield start
    for engine, thread in running:
        engine.stop(timeout=30)
        thread.join(10)
        engine.close()


@pytest.fixture
def engine(start_engine) -> Client:
    return start_engine()


def make_record(
    jobs_dir: Path, state: str, age_hours: float = 1.0, now: float | None = None, files: tuple[str, ...] = ()
) -> Job:
    """A job folder as an earlier engine left it: ``job.json`` plus a bundle folder holding ``files``."""
    created = (time.time() if now is None else now) - age_hours * 3600
    job_id = new_job_id(created)
    job = Job(
        job_id,
        jobs_dir / job_id,
        ClientOptions({"seed": 1}),
        ["a.jpg"],
        created=created,
        state=state,
        finished=None if state in ("queued", "running") else created + 1,
    )
    (job.folder / "bundle").mkdir(parents=True)
    for name in files:
        (job.folder / "bundle" / name).write_bytes(b"test")
    save_record(job)
    return job
