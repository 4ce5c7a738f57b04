"""How a job scales with the number of photos: time per stage, images/s, peak RAM and peak GPU memory.

Usage: python benchmarks/bench_scale.py [--photos 10 50 200] [--size tiny|full] [--device cpu|cuda]
                                        [--keyframes 50] [--keyframes-by linspace|retrieval]

Each N runs in its own process (so peak RAM is that job's), on synthetic 512x384 photos of a textured walk,
with random weights (the tiny checkpoint for the count sweep; ``--size full`` for the real network size).
Prints one table row per N and stage, with the peak resident memory seen during that stage (sampled every 20 ms;
the joint keyframe decode is its own stage); the last column of each N is the model's own RAM (the peak before the
job minus the interpreter), so "beyond the model" = peak - model. On CUDA, peak GPU memory is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.bundle.spec import STAGES  # noqa: E402  (numpy only: cheap in the parent process)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class StagePeaks:
    """Peak resident memory per stage, sampled every ``interval`` seconds by a thread (the stage is the
    one ``progress`` last reported; a peak shorter than the interval can be missed)."""

    def __init__(self, progress, interval: float = 0.02) -> None:
        import threading

        self.progress, self.interval, self.peaks = progress, interval, {}
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            stage = self.progress.stage or "start"
            self.peaks[stage] = max(self.peaks.get(stage, 0), self._rss())

    def __enter__(self) -> StagePeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def one_job(count: int, size: str, device: str, keyframes: int | None, keyframes_by: str) -> dict:
    """Run one job in this process and return its numbers (called in a child process)."""
    import numpy as np
    import torch
    from PIL import Image

    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.pipeline.options import JobOptions
    from panst3r_engine.pipeline.progress import Progress
    from panst3r_engine.pipeline.run import run_job

    with tempfile.TemporaryDirectory(prefix="panst3r-scale-") as tmp:
        tmp = Path(tmp)
        weights = write_random_checkpoint(tmp / f"{size}.pth", "v2", size)
        rng = np.random.default_rng(0)
        strip = rng.integers(0, 255, (384, 512 + 8 * count, 3), dtype=np.uint8)
        strip = np.asarray(Image.fromarray(strip).resize((strip.shape[1] // 8, 48)).resize(strip.shape[1::-1]))
        photos = []
        for i in range(count):
            path = tmp / f"p{i:04d}.jpg"
            Image.fromarray(strip[:, 8 * i : 8 * i + 512]).save(path, quality=90)
            photos.append(path)
        before = _peak_rss_gib()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        progress = Progress()
        options = JobOptions(
            weights=str(weights),
            vocab_embeddings="random",
            device=device,
            keyframes=keyframes,
            keyframes_by=keyframes_by,
            postprocess="standard_v2",
        )
        started = time.perf_counter()
        with StagePeaks(progress) as peaks:
            run_job(photos, tmp / "bundle", options, progress)
        total = time.perf_counter() - started
        gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
        return {
            "photos": count,
            "timings": progress.timings,
            "total": total,
            "peak_rss_gib": _peak_rss_gib(),
            "rss_before_gib": before,
            "stage_peak_gib": {k: v / 2**30 for k, v in peaks.peaks.items()},
            "peak_gpu_gib": gpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keyframes", type=int, default=None)
    parser.add_argument("--keyframes-by", default="linspace", choices=["auto", "linspace", "retrieval"])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_job(args.child, args.size, args.device, args.keyframes, args.keyframes_by)))
        return
    print(f"{'N':>5} {'stage':<18}{'seconds':>9}{'img/s':>9}   peak RAM GiB   peak GPU GiB")
    for count in args.photos:
        command = [
            sys.executable,
            __file__,
            "--child",
            str(count),
            "--size",
            args.size,
            "--device",
            args.device,
            "--keyframes-by",
            args.keyframes_by,
        ] + (["--keyframes", str(args.keyframes)] if args.keyframes else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{count:>5} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        for stage in STAGES:
            if stage in row["timings"]:
                secs = row["timings"][stage]
                peak = row["stage_peak_gib"].get(stage)
                peak = f"{peak:>12.2f}" if peak is not None else ""
                print(f"{count:>5} {stage:<18}{secs:>9.2f}{count / secs if secs else float('inf'):>9.1f}   {peak}")
        gpu = f"{row['peak_gpu_gib']:.2f}" if row["peak_gpu_gib"] is not None else "-"
        print(
            f"{count:>5} {'total':<18}{row['total']:>9.2f}{count / row['total']:>9.2f}   "
            f"{row['peak_rss_gib']:>12.2f}   {gpu:>12}   (RSS before the job {row['rss_before_gib']:.2f})"
        )


if __name__ == "__main__":
    main()
