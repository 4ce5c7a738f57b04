"""The keyframes' joint decode holds one view's full-resolution mask logits at a time, with the same outputs.

Before, every layer of the mask transformer made the [Q, H/2, W/2] logits of all keyframes (39 MB each at
512x384 with 200 queries), and the old and new sets overlapped: 50 keyframes peaked near 4 GB. Each layer only
needs them resized to the stride-16 grid, so they are now made and resized view by view.
"""

from __future__ import annotations

import os
import threading

import torch
import torch.nn.functional as F

from panst3r_engine.model.configs import panst3r_v2
from panst3r_engine.model.mask_transformer import MaskTransformer

CFG = panst3r_v2(tiny=True).panoptic.mask_transformer  # 200 queries, mask_dim 32, 2 layers


def _inputs(views: int, grid: tuple[int, int], seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    h, w = grid
    fpn = [torch.randn(CFG.hidden_dim, h, w, generator=gen) for _ in range(views)]
    feats = [torch.randn(CFG.mask_dim, 8 * h, 8 * w, generator=gen) for _ in range(views)]
    text = F.normalize(torch.randn(5, CFG.lang_dim, generator=gen), dim=-1)
    return fpn, feats, text


def _model() -> MaskTransformer:
    torch.manual_seed(0)
    return MaskTransformer(CFG).eval()


@torch.no_grad()
def test_view_by_view_decode_gives_the_joint_decode_bit_for_bit():
    """``aux_outputs`` keeps the former path (every view's masks made together per layer): the streamed path
    and the per-view final masks equal it exactly."""
    mt = _model()
    fpn, feats, text = _inputs(3, (4, 6))
    joint = mt(fpn, feats, text, aux_outputs=True)
    streamed = mt(fpn, feats, text, masks=False)
    assert "pred_masks" not in streamed
    for key in ("pred_logits", "out_queries", "attention_margin"):
        assert torch.equal(joint[key], streamed[key]), key
    for v in range(3):
        one = mt.predict(streamed["out_queries"], [feats[v]], text)["pred_masks"][0]
        assert torch.equal(one, joint["pred_masks"][v])
    assert [torch.equal(a, b) for a, b in zip(joint["pred_masks"], mt(fpn, feats, text)["pred_masks"])] == [True] * 3


class PeakRss:
    """Largest resident-memory growth while the block runs, sampled every 2 ms (glibc maps allocations this
    large with mmap and unmaps them when freed, so RSS follows the tensors)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss() - self.start)

    def __enter__(self) -> PeakRss:
        self.start = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@torch.no_grad()
def test_the_joint_decode_holds_one_views_mask_logits_at_a_time():
    mt = _model()
    fpn, feats, text = _inputs(8, (24, 32))  # 8 keyframes at 512x384: 200 x 192 x 256 logits = 39 MB each
    one_view = CFG.num_queries * 192 * 256 * 4
    mt(fpn[:2], feats[:2], text, masks=False)  # warm up (allocator, attention kernels)
    with PeakRss() as streamed:
        mt(fpn, feats, text, masks=False)
    assert streamed.peak < 4 * one_view, streamed.peak / 2**20  # all 8 together: 315 MB, twice per layer
