"""The up-front memory estimate: grows with keyframes and photos, and refuses with advice."""

from __future__ import annotations

import pytest
import torch

from panst3r_engine.model.checkpoints import build_model
from panst3r_engine.model.configs import model_config
from panst3r_engine.pipeline.memory import GiB, InsufficientMemory, check_disk, check_fits, estimate

FULL = build_model(model_config("v2"))  # on the meta device: sizes only, no memory
SIZE = (384, 512)


def test_estimate_grows_with_keyframes_and_photos():
    small = estimate(FULL, [SIZE] * 10, 5)
    assert estimate(FULL, [SIZE] * 10, 10).total > small.total
    assert estimate(FULL, [SIZE] * 100, 5).total > small.total
    assert 3 * GiB < small.weights < 4 * GiB  # 805 M float32 parameters
    # 12 layers x 768 tokens x 768 dims x 4 bytes = 27 MiB per keyframe (+ cached projections)
    per_keyframe = estimate(FULL, [SIZE] * 10, 6).must3r_memory - small.must3r_memory
    assert 25 * 2**20 < per_keyframe < 60 * 2**20


def test_a_job_that_fits_passes():
    check_fits(FULL, [SIZE] * 4, 4, torch.device("cpu"), available=8 * GiB)


def test_too_many_keyframes_suggests_fewer():
    sizes = [SIZE] * 200
    budget = estimate(FULL, sizes, 20).total - estimate(FULL, sizes, 20).weights + 1
    with pytest.raises(InsufficientMemory, match=r"use --keyframes (\d+) \(or fewer\)") as info:
        check_fits(FULL, sizes, 200, torch.device("cpu"), available=budget)
    suggested = int(info.value.args[0].split("--keyframes ")[1].split(" ")[0])
    assert 2 <= suggested <= 20
    check_fits(FULL, sizes, suggested, torch.device("cpu"), available=budget)


def test_thousands_of_photos_are_refused_with_advice():
    with pytest.raises(InsufficientMemory, match="even with 2 keyframes; run fewer photos at once"):
        check_fits(FULL, [SIZE] * 5000, 50, torch.device("cpu"), available=1 * GiB)


def test_scratch_disk_is_checked_before_the_job(tmp_path):
    needed = estimate(FULL, [SIZE] * 100, 50).scratch
    check_disk(needed, tmp_path / "not" / "yet" / "made", free=needed)
    with pytest.raises(InsufficientMemory, match=r"needs about 2\.6 GiB of disk space beside .* run fewer photos"):
        check_disk(needed, tmp_path / "out", free=needed - 1)
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_mask_logits_go_to_disk_so_memory_grows_only_with_photos_maps_and_points():
    """Per photo, memory holds the photo, its encoder tokens, panoptic maps and points (at most one per pixel);
    its network input and mask logits (200 x 192 x 256, 39 MB in float32) are on the scratch disk."""
    fifty, five_hundred = estimate(FULL, [SIZE] * 50, 50), estimate(FULL, [SIZE] * 500, 50)
    per_photo = (five_hundred.total - fifty.total) / 450
    assert 2 * 2**20 < per_photo < 16 * 2**20  # before: ~48 MiB (the float32 mask logits in RAM)
    assert (five_hundred.scratch - fifty.scratch) / 450 >= 200 * 192 * 256 * 2
    tiny = build_model(model_config("v2", tiny=True))
    small = estimate(tiny, [SIZE] * 10, 10)
    assert small.total - small.weights < 1 * GiB  # 0.6 GiB; bench_scale measured a 0.96 GiB peak (torch arenas too)


TINY = build_model(model_config("v2", tiny=True))
MASK_LOGITS = 200 * 192 * 256 * 4  # one 512x384 view's float32 mask logits


def test_a_keyframe_adds_its_features_not_its_mask_logits():
    """The joint decode makes full-resolution mask logits one view at a time (before: all keyframes', twice)."""
    per_keyframe = estimate(TINY, [SIZE] * 50, 50).keyframes - estimate(TINY, [SIZE] * 50, 49).keyframes
    assert 6 * 2**20 < per_keyframe < MASK_LOGITS / 4  # its stride-2 features (6 MiB) and attention masks
    assert estimate(TINY, [SIZE] * 50, 50).keyframes < 50 * MASK_LOGITS / 3


def test_a_photo_past_the_keyframes_costs_its_results_not_its_network_input():
    """Past the keyframes a tiny-checkpoint photo adds its photo, tokens, panoptic ids and points (at most one per
    pixel: 36 B per pixel in all); its float32 network input (12 B per pixel) waits on disk."""
    many, few, pixels = estimate(TINY, [SIZE] * 500, 50), estimate(TINY, [SIZE] * 50, 50), SIZE[0] * SIZE[1]
    tokens = pixels // 256 * TINY.cfg.encoder.dim * 4
    assert (many.per_view - few.per_view) / 450 == tokens + 3 * pixels  # before: + 12 B per pixel of input
    assert (many.results - few.results) / 450 == 36 * pixels  # before: 48 B per pixel
    assert (many.total - few.total) / 450 < 38 * pixels


def test_backbone_working_memory_counts_the_views_the_backbones_really_batch():
    """The backbones take BACKBONE_BATCH views per call even with max_batch=1, so the check must count them."""
    from panst3r_engine.model.inference import BACKBONE_BATCH

    def working(max_batch):
        return estimate(FULL, [SIZE] * 10, 5, max_batch=max_batch).working

    per_chunk_view = working(2) - working(1)  # below BACKBONE_BATCH only the panoptic chunk grows
    backbone_at_one = working(1) - per_chunk_view
    assert backbone_at_one > 0  # was 0: max_batch=1 counted one backbone view
    many = 2 * BACKBONE_BATCH
    assert working(many) - many * per_chunk_view == 2 * backbone_at_one  # above it, the backbone batch grows too
