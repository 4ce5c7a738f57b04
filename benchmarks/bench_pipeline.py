"""The whole job on N synthetic photos at 512 with the full-size model (random weights).

Usage: python benchmarks/bench_pipeline.py [--photos 6] [--version v2] [--device cpu] [--postprocess standard_v2]

Prints time per stage, images/s and peak memory. The checkpoint is written
once to a temporary folder (3.2-3.5 GB) unless --weights names one.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panst3r_engine.model.checkpoints import write_random_checkpoint  # noqa: E402
from panst3r_engine.pipeline.options import JobOptions  # noqa: E402
from panst3r_engine.pipeline.progress import Progress  # noqa: E402
from panst3r_engine.pipeline.run import run_job  # noqa: E402


def synthetic_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        yy, xx = np.mgrid[0:384, 0:512]
        img = np.stack([(xx + 40 * i) % 256, yy % 256, (xx * yy // 97) % 256], -1).astype(np.uint8)
        img[rng.integers(0, 300) :, rng.integers(0, 400) :] //= 2
        path = folder / f"photo_{i:03d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--version", choices=["v1", "v2"], default="v2")
    parser.add_argument("--weights", default=None, help="a checkpoint to use instead of random full-size weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keyframes", type=int, default=None)
    parser.add_argument("--postprocess", default=None)
    parser.add_argument("--max-batch", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="panst3r-bench-") as tmp:
        tmp = Path(tmp)
        weights = args.weights or str(write_random_checkpoint(tmp / "full.pth", args.version, "full"))
        photos = synthetic_photos(tmp, args.photos)
        progress = Progress()
        opts = JobOptions(
            weights=weights,
            vocab_embeddings="random",
            device=args.device,
            keyframes=args.keyframes,
            postprocess=args.postprocess,
            max_batch=args.max_batch,
        )
        started = time.perf_counter()
        result = run_job(photos, tmp / "bundle", opts, progress)
        total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{args.photos} photos at 512x384, {args.version}, device {args.device}, postprocess "
        f"{result.manifest['options']['postprocess']}"
    )
    print(f"{'stage':<20}{'seconds':>9}")
    for stage, secs in result.timings.items():
        print(f"{stage:<20}{secs:>9.2f}")
    print(f"{'total':<20}{total:>9.2f}")
    network = sum(
        result.timings.get(s, 0) for s in ("encode", "memory", "render_keyframes", "decode_keyframes", "render_views")
    )
    print(f"{'images/s (network)':<20}{args.photos / max(network, 1e-9):>9.2f}")
    print(f"{'images/s (job)':<20}{args.photos / total:>9.2f}")
    print(f"{'peak RSS GiB':<20}{peak:>9.2f}")


if __name__ == "__main__":
    main()
