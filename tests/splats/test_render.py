"""render(): backend dispatch, outputs, camera checks, render_view's cache; gsplat CUDA parity on a GPU."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.splats import choose_backend, gsplat_cuda_available, render, render_view, write_splats_ply
from panst3r_engine.splats.init import init_from_bundle
from tests.bundle_utils import make_bundle_inputs
from tests.splats.test_torch_render import camera, random_scene

# The package exports the function ``render``, which shadows the submodule as an attribute.
render_module = importlib.import_module("panst3r_engine.splats.render")


@pytest.fixture()
def bundle_with_splats(tmp_path: Path) -> Path:
    root = write_bundle(tmp_path / "job", *make_bundle_inputs())
    model = init_from_bundle(root)
    model.opacities.fill_(2.0)  # opaque enough to be seen
    write_splats_ply(model, root / "splats.ply")
    return root


def test_cpu_tensors_use_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(render_module.BACKEND_ENV, raising=False)
    assert choose_backend("cpu") == "torch"
    assert choose_backend("cpu", "torch") == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_backend("cpu", "gsplat")
    monkeypatch.setenv(render_module.BACKEND_ENV, "gsplat")
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_backend("cpu")  # the override is honoured, and refused without kernels
    monkeypatch.setenv(render_module.BACKEND_ENV, "bogus")
    with pytest.raises(ValueError):
        choose_backend("cpu")
    with pytest.raises(ValueError):
        choose_backend("cpu", "vulkan")


def test_render_outputs(bundle_with_splats: Path) -> None:
    from panst3r_engine.splats import read_splats_ply

    model = read_splats_ply(bundle_with_splats / "splats.ply")
    pose = np.eye(4)
    pose[2, 3] = -6.0  # outside the unit-normal point cloud, looking at it
    out = render(model, [[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]], pose, 32, 24)
    assert out.backend == "torch"
    assert out.rgb.shape == (24, 32, 3) and out.rgb.dtype == np.float32
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1
    assert out.alpha.shape == (24, 32) and out.depth.shape == (24, 32)
    assert out.segment.shape == (24, 32) and out.segment.dtype == np.int32 and out.class_id.dtype == np.int32
    assert out.alpha.max() > 0.5 and (out.segment > 0).any()
    assert ((out.segment == 0) == (out.class_id == -1)).all()
    hit = out.alpha > 0.01
    assert (out.depth[hit] > 0).all()


def test_camera_checks() -> None:
    from tests.splats.test_labels import two_discs

    model = two_discs()
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    for bad in [
        {"K": np.eye(2)},
        {"cam_to_world": np.full((4, 4), np.nan)},
        {"width": 0},
        {"height": 100_000},
        {"width": 3.5},
        {"cam_to_world": np.zeros((4, 4))},
    ]:
        args = {"K": K, "cam_to_world": np.eye(4), "width": 32, "height": 24, **bad}
        with pytest.raises(ValueError):
            render(model, **args)


def test_render_view_and_cache(bundle_with_splats: Path) -> None:
    cam = make_bundle_inputs()[0]["cameras"][1]
    rgb, seg = render_view(bundle_with_splats, cam["K"], cam["cam_to_world"], 32, 24)
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8 and seg.dtype == np.int32
    first = render_module.load_bundle_splats(bundle_with_splats)
    assert render_module.load_bundle_splats(bundle_with_splats) is first  # cached
    ply = bundle_with_splats / "splats.ply"
    stat = ply.stat()
    write_splats_ply(first, ply)
    os.utime(ply, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new file version
    assert render_module.load_bundle_splats(bundle_with_splats) is not first
    ply.unlink()
    with pytest.raises(BundleError, match="splats.ply"):
        render_view(bundle_with_splats, cam["K"], cam["cam_to_world"], 32, 24)


needs_gsplat_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and gsplat_cuda_available()),
    reason="needs a CUDA GPU with gsplat's compiled kernels",
)


@needs_gsplat_cuda
def test_cuda_dispatch_and_parity_with_gsplat() -> None:
    scene = {k: v.float().cuda() for k, v in random_scene(400, 9).items()}
    viewmats, Ks = (t.float().cuda() for t in camera(64, 48))
    assert choose_backend("cuda") == "gsplat"
    outs = {}
    for backend in ("torch", "gsplat"):
        params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
        out, alpha, _ = render_module.rasterize(
            params["means"],
            params["quats"],
            params["scales"],
            params["opacities"],
            params["colors"],
            viewmats,
            Ks,
            64,
            48,
            backend=backend,
            render_mode="RGB+ED",
        )
        (out[..., :3].sum() + alpha.sum()).backward()
        outs[backend] = (out.detach(), alpha.detach(), {k: v.grad for k, v in params.items()})
    # CUDA uses fast-math __expf and float32 transmittance; ours float64 transmittance: small differences.
    torch.testing.assert_close(outs["torch"][0][..., :3], outs["gsplat"][0][..., :3], rtol=0, atol=2e-3)
    torch.testing.assert_close(outs["torch"][1], outs["gsplat"][1], rtol=0, atol=2e-3)
    for name in scene:  # gradients: compared loosely (relative to their scale)
        a, b = outs["torch"][2][name], outs["gsplat"][2][name]
        assert (a - b).norm() <= 0.02 * b.norm() + 1e-6, name


def test_cuda_path_is_skipped_cleanly_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the parity test covers the CUDA path")
    assert gsplat_cuda_available() is False  # never tries gsplat's JIT build on a CPU-only torch
