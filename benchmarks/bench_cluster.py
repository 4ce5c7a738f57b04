"""Throughput of ``serve --cluster``: N jobs on 1 vs 2 Ray workers, against the in-process engine.

Usage: python benchmarks/bench_cluster.py [--jobs 8] [--workers 1,2] [--photos 2] [--no-local] [--eval-scenes 2]

Each row starts a real engine (``python -m panst3r_engine serve --port 0``, a tiny random checkpoint, CPU),
with ``--cluster ray --cluster-cpu-workers W`` (a private local Ray that the engine starts and stops) or
without ``--cluster`` ("local"). One warm-up job per worker runs first (workers load their model when they
start); then ``--jobs`` identical jobs are submitted at once and timed until the last one is done. On a
machine with few cores the workers compete for them: the speed-up shows dispatch working, not GPU scaling.

``--eval-scenes N`` (needs bpy) also times ``eval run`` over N rendered rooms: in turn in this process, then with
``--cluster ray --cluster-cpu-workers W`` for each W (one Ray for all rows; each row's time includes starting
its workers and loading their models, as a real run does). ``--eval-scenes 0`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panst3r_engine.model.checkpoints import write_random_checkpoint  # noqa: E402
from tests.service.conftest import FAST, photo_bytes  # noqa: E402

TOKEN = "bench-cluster-token-0123456789abcdef"
TIMEOUT_S = 1800.0


def start(folder: Path, checkpoint: Path, workers: int | None) -> tuple[subprocess.Popen, str]:
    token_file = folder / "token.txt"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    cmd = [sys.executable, "-m", "panst3r_engine", "serve", "--port", "0", "--token-file", str(token_file)]
    cmd += ["--weights", str(checkpoint), "--device", "cpu", "--jobs-dir", str(folder / f"jobs-{workers}")]
    if workers:
        cmd += ["--cluster", "ray", "--cluster-cpu-workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the engine did not start: {' '.join(cmd)}")
    return proc, json.loads(line)["url"]


def run_jobs(session: requests.Session, url: str, count: int, photos: list) -> float:
    """Submit ``count`` jobs at once; seconds until every one is done."""
    files = [("images", (name, data, "image/jpeg")) for name, data in photos]
    started = time.monotonic()
    ids = []
    for _ in range(count):
        body = [*files, ("options", (None, json.dumps({**FAST, "seed": 7})))]
        response = session.post(f"{url}/v1/jobs", files=body, timeout=60)
        response.raise_for_status()
        ids.append(response.json()["id"])
    pending = set(ids)
    while pending:
        if time.monotonic() - started > TIMEOUT_S:
            raise SystemExit(f"jobs still running after {TIMEOUT_S} s")
        for job_id in list(pending):
            job = session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
            if job["state"] != "queued" and job["state"] != "running":
                if job["state"] != "done":
                    raise SystemExit(f"job {job_id} {job['state']}: {job.get('error')}")
                pending.discard(job_id)
        time.sleep(0.2)
    return time.monotonic() - started


def measure(folder: Path, checkpoint: Path, workers: int | None, jobs: int, photos: list) -> dict:
    proc, url = start(folder, checkpoint, workers)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    try:
        warm = run_jobs(session, url, workers or 1, photos)
        seconds = run_jobs(session, url, jobs, photos)
        health = session.get(f"{url}/v1/health", timeout=30).json()
        session.post(f"{url}/v1/shutdown", timeout=30)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
    return {
        "engine": f"ray, {workers} worker(s)" if workers else "local",
        "warm_s": warm,
        "seconds": seconds,
        "workers": health["workers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--eval-scenes", type=int, default=2, help="eval run over N scenes too (0: skip; needs bpy)")
    parser.add_argument("--eval-only", action="store_true", help="skip the service rows")
    args = parser.parse_args()
    if args.eval_only:
        eval_rows(args.eval_scenes, [int(w) for w in args.workers.split(",")])
        return
    photos = [(f"p{i}.jpg", photo_bytes(seed=10 + i)) for i in range(args.photos)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = write_random_checkpoint(folder / "tiny_v2.pth", "v2", "tiny", seed=5)
        setups = ([] if args.no_local else [None]) + [int(w) for w in args.workers.split(",")]
        rows = [measure(folder, checkpoint, workers, args.jobs, photos) for workers in setups]
    print(f"\n{args.jobs} jobs of {args.photos} photos (tiny checkpoint, CPU, {os.cpu_count()} cores)")
    print(f"{'engine':<22}{'workers':>8}{'warm-up s':>11}{'jobs s':>9}{'s/job':>8}")
    for row in rows:
        per_job = row["seconds"] / args.jobs
        print(f"{row['engine']:<22}{row['workers']:>8}{row['warm_s']:>11.1f}{row['seconds']:>9.1f}{per_job:>8.2f}")
    if args.eval_scenes:
        eval_rows(args.eval_scenes, [int(w) for w in args.workers.split(",")])


def eval_rows(count: int, workers: list[int]) -> None:
    """``eval run`` over ``count`` rendered rooms: in turn, then on 1, 2, ... Ray CPU workers; one table."""
    import ray

    from panst3r_engine.cli import main as engine_main
    from panst3r_engine.eval.batch import ClusterOptions, evaluate_scenes, scene_out_dirs
    from panst3r_engine.eval.run import EvalOptions
    from panst3r_engine.service.executors.ray_cluster import engine_runtime_env

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = write_random_checkpoint(folder / "tiny_v2.pth", "v2", "tiny", seed=5)
        scenes = []
        for seed in range(count):
            scenes.append(folder / f"room{seed}")
            make = ["eval", "make-scene", str(scenes[-1]), "--seed", str(seed), "--views", "6"]
            if engine_main([*make, "--width", "256", "--height", "192", "--fast"]) != 0:
                raise SystemExit("cannot render the scenes (eval make-scene needs bpy==5.0.1)")
        opts = EvalOptions(
            weights=str(checkpoint), vocab_embeddings="random", device="cpu", resize="none", conf_threshold=1.0
        )
        ray.init(num_cpus=max(workers), runtime_env=engine_runtime_env(), include_dashboard=False, log_to_driver=False)
        rows = []
        try:
            for w in [None, *workers]:
                out = folder / f"out-{w}"
                cluster = ClusterOptions("ray", w) if w else None
                started = time.monotonic()
                results = evaluate_scenes(scenes, scene_out_dirs(scenes, out), opts, cluster)
                seconds = time.monotonic() - started
                if any(r.error for r in results):
                    raise SystemExit(f"a scene failed: {[str(r.error) for r in results if r.error]}")
                rows.append((f"ray, {w} worker(s)" if w else "in turn (no --cluster)", seconds))
        finally:
            ray.shutdown()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\neval run over {count} scenes (6 views 256x192, tiny checkpoint, CPU, {os.cpu_count()} cores)")
    print(f"load average at the end: {load}")
    print(f"{'run':<26}{'total s':>9}{'scenes/h':>10}")
    for name, seconds in rows:
        print(f"{name:<26}{seconds:>9.1f}{3600 * count / seconds:>10.0f}")


if __name__ == "__main__":
    main()
