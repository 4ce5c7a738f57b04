"""The fit: better novel views on a ray-cast scene, labels kept, the bundle updated atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.splats import add_splats_to_bundle, fit_bundle, read_splats_ply, render, render_view
from panst3r_engine.splats.fit import FixedDefaultStrategy, make_view, mean_psnr, ssim
from panst3r_engine.splats.labels import pixel_accuracy
from tests.splats.scene import SEGMENT_CLASS, class_map, make_scene, to_uint8


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """8 training views at 64x48 in the bundle, 2 held-out novel views; <= 2000 Gaussians, 150 steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run outside the per-test thread fixture (see conftest)
    try:
        bundle, cams, shots = make_scene(tmp_path_factory.mktemp("scene") / "job", 64, 48, n_train=8, n_test=2)
        calls = []
        result = fit_bundle(bundle, steps=150, max_gaussians=2000, progress=lambda *a: calls.append(a))
    finally:
        torch.set_num_threads(threads)
    return bundle, cams, shots, result, calls


def test_fit_improves_held_out_views(fitted) -> None:
    _, cams, shots, result, _ = fitted
    views = [make_view(f"test{i}", to_uint8(s.rgb), c.K, c.cam_to_world) for i, (c, s) in enumerate(zip(cams, shots))]
    before, after = mean_psnr(result.initial, views), mean_psnr(result.model, views)
    # Measured 14.0 -> 18.2-18.6 dB over seeds 0-2 (train views 14.6 -> 20.0-20.5). The 3 dB margin leaves
    # room for other seeds and BLAS builds.
    assert after > before + 3.0, (before, after)
    assert result.stats["psnr_after"] > result.stats["psnr_before"] + 3.0


def test_labels_on_held_out_views(fitted) -> None:
    _, cams, shots, result, _ = fitted
    seg_acc, cls_acc = [], []
    for cam, shot in zip(cams, shots):
        out = render(result.model, cam.K, cam.cam_to_world, cam.width, cam.height)
        seg_acc.append(pixel_accuracy(out.segment, shot.segment))
        cls_acc.append(pixel_accuracy(out.class_id, class_map(shot.segment)))
    # Measured 0.91-0.92 (instance and class) over seeds 0-2 for this 150-step, 2k-Gaussian fit (0.917 for
    # the unfitted initial Gaussians: the labels come from the points, the fit only sharpens geometry). Errors
    # sit on object rims and in floor holes the closer novel pose reveals (alpha < 0.5 reads as void).
    # Predicting the most common label (floor) everywhere scores 0.54, sky everywhere 0.31.
    assert np.mean(seg_acc) > 0.85 and np.mean(cls_acc) > 0.85, (seg_acc, cls_acc)


def test_fit_keeps_labels_and_counts(fitted) -> None:
    _, _, _, result, calls = fitted
    model, initial = result.model, result.initial
    assert len(initial) <= 2000 and len(initial) < len(model) <= 2000  # densified, then capped
    classes = torch.tensor([SEGMENT_CLASS.get(int(s), -1) for s in model.segment])
    assert torch.equal(model.class_id.long(), classes)  # labels rode along through duplicate/split
    assert torch.isfinite(model.means).all() and torch.isfinite(model.scales).all()
    assert result.stats["count"] == len(model) and result.stats["steps"] == 150
    np.testing.assert_allclose(model.background.numpy(), [0.85, 0.9, 1.0], atol=0.02)  # the sky
    fractions = [c[1] for c in calls]
    assert all(c[0] == "splats" for c in calls) and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_add_splats_to_bundle(tmp_path: Path) -> None:
    bundle, cams, _ = make_scene(tmp_path / "job", 32, 24, n_train=4, n_test=1)
    path = add_splats_to_bundle(bundle, steps=10, device="cpu")
    assert path == bundle / "splats.ply"
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["splats"]
    assert entry["file"] == "splats.ply" and entry["steps"] == 10
    assert set(entry) == {"file", "count", "steps", "psnr_before", "psnr_after", "seconds"}
    assert entry["count"] == len(read_splats_ply(path)) and entry["seconds"] > 0
    assert read_bundle(bundle).extra("splats.ply") == path  # still a valid bundle
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith(".")) == []  # no temp files left
    rgb, seg = render_view(bundle, cams[0].K, cams[0].cam_to_world, 32, 24)
    assert rgb.shape == (24, 32, 3) and (seg > 0).any()


def test_opacity_reset_fires() -> None:
    """gsplat 1.5.3's DefaultStrategy never resets opacities; ours does, every reset_every steps."""
    from panst3r_engine.splats._torch_render import rasterize

    params = {
        "means": torch.nn.Parameter(torch.tensor([[0.0, 0, 3], [0.2, 0, 3]])),
        "scales": torch.nn.Parameter(torch.full((2, 3), math.log(0.1))),
        "quats": torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1)),
        "opacities": torch.nn.Parameter(torch.full((2,), 3.0)),
    }
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = FixedDefaultStrategy(reset_every=10, refine_start_iter=100, refine_stop_iter=1000)
    state = strategy.initialize_state()
    for step in (9, 10):
        out, _, info = rasterize(
            params["means"],
            params["quats"],
            params["scales"].exp(),
            params["opacities"].sigmoid(),
            torch.ones(2, 3),
            torch.eye(4)[None],
            torch.tensor([[[20.0, 0, 8], [0, 20, 6], [0, 0, 1]]]),
            16,
            12,
        )
        strategy.step_pre_backward(params, optimizers, state, step, info)
        out.sum().backward()
        strategy.step_post_backward(params, optimizers, state, step, info)
        reset = bool((params["opacities"].sigmoid() <= 2 * strategy.prune_opa + 1e-6).all())
        assert reset == (step == 10)


def test_ssim() -> None:
    img = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(0))
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(img, 1 - img)) < 0.2


def test_a_time_budget_plans_the_steps_that_fit(fitted) -> None:
    """With a budget the fit times its first steps and stops near the budget instead of running all steps."""
    import time

    bundle = fitted[0]
    started = time.perf_counter()
    calls = []
    result = fit_bundle(
        bundle, steps=100_000, max_gaussians=2000, time_budget_s=1.0, progress=lambda *a: calls.append(a)
    )
    assert 10 < result.stats["steps"] < 100_000
    assert time.perf_counter() - started < 60  # all 100 000 steps would take an hour here
    assert calls[-1][1] == 1.0  # progress ends at 100 % of the planned steps
