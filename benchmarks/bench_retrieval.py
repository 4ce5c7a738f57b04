"""How long retrieval keyframes take: MUSt3R's retrieval head plus ASMK over V views, at the published sizes.

Usage: python benchmarks/bench_retrieval.py [--views 50 200] [--device cpu|cuda] [--clusters 65536]
                                            [--nfeat 300] [--tokens 768]

Random head weights and codebook (the real ones are not needed for timing): 1024-d encoder tokens (768 per
view = a 512x384 photo), a 1024-wide projector, ``--clusters`` visual words. Prints one row per V: the head's
descriptors, the word assignment + aggregation + similarity, the keyframe choice (FPS + ordering), in seconds.
The codebook size of the published file is not stated in the fact sheets, hence the flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from panst3r_engine.model.retrieval import RetrievalConfig, RetrievalHead
    from panst3r_engine.pipeline.asmk import asmk_similarity
    from panst3r_engine.pipeline.keyframes import retrieval_keyframes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clusters", type=int, default=65536)
    parser.add_argument("--nfeat", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=768)
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    head = RetrievalHead(RetrievalConfig(1024, (1024,), True, False, False, args.nfeat, args.clusters)).to(device)
    codebook = torch.nn.functional.normalize(torch.randn(args.clusters, 1024, generator=gen), dim=-1).to(device)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    print(f"device {device}, {args.clusters} words, nfeat {args.nfeat}, {args.tokens} tokens per view")
    print("views  head_s  asmk_s  choose_s  total_s")
    for views in args.views:
        tokens = [torch.randn(args.tokens, 1024, generator=gen).to(device) for _ in range(views)]
        t0 = sync()
        descriptors = [head.local_descriptors(t) for t in tokens]
        t1 = sync()
        similarity = asmk_similarity(descriptors, codebook)
        t2 = sync()
        retrieval_keyframes(similarity, min(50, views), seed=0)
        t3 = sync()
        print(f"{views:5d}  {t1 - t0:6.2f}  {t2 - t1:6.2f}  {t3 - t2:8.3f}  {t3 - t0:7.2f}", flush=True)


if __name__ == "__main__":
    main()
