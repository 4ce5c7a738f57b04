"""Job records: the public view, ``job.json`` written atomically, and what a restarted engine makes of it."""

from __future__ import annotations

import json
import time

from panst3r_engine.service.records import ID_PATTERN, iso, load_record, load_records, new_job_id
from tests.service.conftest import make_record


def test_ids_sort_by_time_and_timestamps_are_iso_utc():
    early, late = new_job_id(0), new_job_id(86400 * 365)
    assert ID_PATTERN.match(early) and early.startswith("19700101-000000-") and early < late
    assert iso(0.5) == "1970-01-01T00:00:00.500Z" and iso(None) is None


def test_public_view_has_the_api_fields(jobs_dir):
    job = make_record(jobs_dir, "done")
    assert list(job.public(None)) == [
        "id",
        "state",
        "stage",
        "fraction",
        "message",
        "error",
        "created",
        "started",
        "finished",
        "num_images",
        "segments",
        "has_splats",
        "position",
    ]
    assert sorted(p.name for p in job.folder.iterdir()) == ["bundle", "job.json"]  # no temp file left


def test_restart_lists_old_jobs_and_fails_interrupted_ones(jobs_dir):
    now = time.time()
    done, running, queued = (make_record(jobs_dir, s, 1, now) for s in ("done", "running", "queued"))
    (jobs_dir / "not-a-job").mkdir()
    (jobs_dir / "20250101-000000-abcdef").mkdir()  # no job.json: ignored, not deleted
    listed = {job.id: job for job in load_records(jobs_dir)}
    assert set(listed) == {done.id, running.id, queued.id}
    assert listed[done.id].state == "done" and listed[done.id].error is None
    for job in (running, queued):
        assert listed[job.id].state == "failed" and listed[job.id].error["code"] == "engine_stopped"
        assert listed[job.id].finished is not None
        assert json.loads((job.folder / "job.json").read_text())["state"] == "failed"
    assert (jobs_dir / "not-a-job").exists() and (jobs_dir / "20250101-000000-abcdef").exists()


def test_unreadable_or_moved_records_are_ignored(jobs_dir):
    broken = make_record(jobs_dir, "done")
    (broken.folder / "job.json").write_text("{not json")
    assert load_record(broken.folder) is None
    moved = make_record(jobs_dir, "done")
    other = jobs_dir / "20200101-000000-000000"
    moved.folder.rename(other)
    assert load_record(other) is None  # the id inside must match the folder
