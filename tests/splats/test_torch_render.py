"""The CPU rasteriser against a plain per-pixel restatement of gsplat's CUDA rules, and its gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panst3r_engine.splats._torch_render import rasterize

SH_C0, SH_C1 = 0.28209479177387814, 0.48860251190292


def random_scene(
    n: int, seed: int, opacity=(0.05, 0.95), channels: int = 3, spread: float = 0.6, dtype=torch.float64
) -> dict:
    """n Gaussians around 3 m in front of the identity camera, a few behind it or at the image edges."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * spread + torch.tensor([0.0, 0.0, 3.0], dtype=dtype)
    means[:2, 2] = -1.0  # behind the camera: culled
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": torch.rand(n, 3, generator=g, dtype=dtype) * 0.15 + 0.01,
        "opacities": torch.rand(n, generator=g, dtype=dtype) * (opacity[1] - opacity[0]) + opacity[0],
        "colors": torch.rand(n, channels, generator=g, dtype=dtype),
    }


def camera(width: int, height: int, dtype=torch.float64, yaw: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats [1, 4, 4], Ks [1, 3, 3]): a camera at the origin turned by ``yaw`` about its y axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    view = torch.tensor([[c, 0, -s, 0.1], [0, 1, 0, -0.05], [s, 0, c, 0.0], [0, 0, 0, 1]], dtype=dtype)
    f = 1.1 * width
    return view[None], torch.tensor(
        [[[f, 0, width / 2 + 0.3], [0, f * 1.02, height / 2 - 0.2], [0, 0, 1]]], dtype=dtype
    )


def reference_render(
    scene: dict, viewmat: np.ndarray, K: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(colors [H, W, D], alpha [H, W], early stops): gsplat 1.5.3's projection and forward kernel, pixel by pixel.

    Projection: EWA with the Jacobian's x/z, y/z clamped to 1.3x the field of view, +0.3 px blur, culled below
    the near plane (0.01), below opacity 1/255 and when the opacity-aware box misses the image. Kernel: pixel
    centre at +0.5, front to back by camera z, alpha = min(0.999, o exp(-sigma)), skip sigma < 0 or
    alpha < 1/255, stop before a contribution that would bring T to <= 1e-4.
    """
    sc = {k: v.detach().numpy().astype(np.float64) for k, v in scene.items()}
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    gauss = []
    for i in range(len(sc["means"])):
        w, x, y, z = sc["quats"][i] / np.linalg.norm(sc["quats"][i])
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        m = rot * sc["scales"][i]
        p = viewmat[:3, :3] @ sc["means"][i] + viewmat[:3, 3]
        cov_c = viewmat[:3, :3] @ (m @ m.T) @ viewmat[:3, :3].T
        opacity = sc["opacities"][i]
        if p[2] < 0.01 or opacity < 1 / 255:
            continue
        tx = p[2] * np.clip(p[0] / p[2], -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        ty = p[2] * np.clip(p[1] / p[2], -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
        jac = np.array([[fx / p[2], 0, -fx * tx / p[2] ** 2], [0, fy / p[2], -fy * ty / p[2] ** 2]])
        cov2d = jac @ cov_c @ jac.T + 0.3 * np.eye(2)
        mean2d = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
        extend = min(3.33, math.sqrt(2 * math.log(255 * opacity)))
        rx, ry = math.ceil(extend * math.sqrt(cov2d[0, 0])), math.ceil(extend * math.sqrt(cov2d[1, 1]))
        if mean2d[0] + rx <= 0 or mean2d[0] - rx >= width or mean2d[1] + ry <= 0 or mean2d[1] - ry >= height:
            continue
        gauss.append((p[2], i, mean2d, np.linalg.inv(cov2d), opacity))
    gauss.sort(key=lambda item: item[0])  # stable: equal depths keep index order
    out = np.zeros((height, width, sc["colors"].shape[1]))
    alpha_out = np.zeros((height, width))
    stops = 0
    for row in range(height):
        for col in range(width):
            t = 1.0
            for _, i, mean2d, conic, opacity in gauss:
                dx, dy = mean2d[0] - (col + 0.5), mean2d[1] - (row + 0.5)
                sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
                alpha = min(0.999, opacity * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    stops += 1
                    break
                out[row, col] += alpha * t * sc["colors"][i]
                t *= 1 - alpha
            alpha_out[row, col] = 1 - t
    return out, alpha_out, stops


def _render(scene: dict, width: int, height: int, yaw: float = 0.0, **kwargs):
    viewmats, Ks = camera(width, height, scene["means"].dtype, yaw)
    return rasterize(
        scene["means"],
        scene["quats"],
        scene["scales"],
        scene["opacities"],
        scene["colors"],
        viewmats,
        Ks,
        width,
        height,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("n", "seed", "opacity", "channels", "yaw"), [(60, 0, (0.05, 0.95), 3, 0.0), (300, 1, (0.9, 1.0), 5, 0.2)]
)
def test_matches_per_pixel_reference(n, seed, opacity, channels, yaw) -> None:
    width, height = 40, 30
    scene = random_scene(n, seed, opacity, channels)
    colors, alphas, meta = _render(scene, width, height, yaw)
    viewmats, Ks = camera(width, height, torch.float64, yaw)
    ref, ref_alpha, stops = reference_render(scene, viewmats[0].numpy(), Ks[0].numpy(), width, height)
    if opacity[0] >= 0.9:
        assert stops > 50, "the saturated scene must exercise the T <= 1e-4 stop"
    assert colors.shape == (1, height, width, channels) and alphas.shape == (1, height, width, 1)
    # float64 both sides; only the summation order differs (measured max error 1e-13).
    np.testing.assert_allclose(colors[0].numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(alphas[0, ..., 0].numpy(), ref_alpha, rtol=0, atol=1e-10)
    assert meta["radii"].shape == (1, n, 2) and (meta["radii"][0, :2] == 0).all()  # behind the camera


def test_float32_close_to_float64() -> None:
    scene = random_scene(200, 2)
    c64, a64, _ = _render(scene, 48, 36)
    c32, a32, _ = _render({k: v.float() for k, v in scene.items()}, 48, 36)
    # float32 inputs: projection and exp in float32, transmittance still float64 (measured max 2e-5).
    np.testing.assert_allclose(c32.numpy(), c64.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(a32.numpy(), a64.numpy(), rtol=0, atol=1e-4)


def test_gradcheck() -> None:
    scene = random_scene(6, 3, opacity=(0.3, 0.8), spread=0.3)
    scene["means"][:2, 2] = torch.tensor([2.8, 3.3], dtype=torch.float64)  # in view (distinct depths: no ties)
    names = ("means", "quats", "scales", "opacities", "colors")
    viewmats, Ks = camera(12, 10)

    def fn(means, quats, scales, opacities, colors):
        out, alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 12, 10, render_mode="RGB+ED")
        return out, alpha

    inputs = tuple(scene[k].clone().requires_grad_(True) for k in names)
    # Finite differences (eps 1e-6) in float64; the loose-ish atol covers the second-order error of the
    # central difference on exp() of sigmas up to ~10.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_sh_degrees_0_and_1() -> None:
    width, height = 32, 24
    scene = random_scene(40, 4)
    g = torch.Generator().manual_seed(5)
    sh = torch.randn(40, 4, 3, generator=g, dtype=torch.float64) * 0.5  # [N, 4, 3]
    viewmats, _ = camera(width, height)
    campos = torch.linalg.inv(viewmats[0])[:3, 3]
    x, y, z = torch.nn.functional.normalize(scene["means"] - campos, dim=-1).unbind(-1)
    for degree in (0, 1):
        rgb = SH_C0 * sh[:, 0] + 0.5
        if degree == 1:  # gsplat's order: -C1 y, C1 z, -C1 x
            rgb = rgb + SH_C1 * (-y[:, None] * sh[:, 1] + z[:, None] * sh[:, 2] - x[:, None] * sh[:, 3])
        expected, _, _ = _render({**scene, "colors": rgb.clamp_min(0)}, width, height)
        got, _, _ = _render({**scene, "colors": sh}, width, height, sh_degree=degree)
        # Same compositing; SH evaluated by gsplat's Sloan code vs the formula here (float64).
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-12)


def test_depth_alpha_and_pixel_convention() -> None:
    """A Gaussian whose mean projects onto a pixel centre has alpha = opacity there and depth = its z."""
    width, height, z = 16, 12, 2.5
    K = torch.tensor([[[20.0, 0, 8.5], [0, 20.0, 6.5], [0, 0, 1]]], dtype=torch.float64)  # centre of (8, 6)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 3] = torch.tensor([0.3, -0.2, 0.5])
    mean = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64) - pose[:3, 3]  # camera-frame (0, 0, z)
    args = (
        mean,
        torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
        torch.full((1, 3), 0.05, dtype=torch.float64),
        torch.tensor([0.7], dtype=torch.float64),
        torch.ones(1, 3, dtype=torch.float64),
        pose[None],
        K,
        width,
        height,
    )
    for mode, value in (("D", 0.7 * z), ("ED", z), ("RGB+ED", z)):
        out, alpha, _ = rasterize(*args, render_mode=mode)
        assert alpha[0, 6, 8, 0].item() == pytest.approx(0.7, abs=1e-12)
        assert out[0, 6, 8, -1].item() == pytest.approx(value, abs=1e-12)
        assert int(torch.argmax(alpha[0, ..., 0])) == 6 * width + 8
    ed, alpha, _ = rasterize(*args, render_mode="ED")
    far = alpha[0, ..., 0] < 1e-12
    assert far.any() and (ed[0, ..., 0][far] == 0).all()  # no hit: expected depth 0


def test_feature_channels_and_backgrounds() -> None:
    scene = random_scene(80, 6, channels=7)
    colors, alphas, _ = _render(scene, 24, 20)
    part, _, _ = _render({**scene, "colors": scene["colors"][:, 2:5]}, 24, 20)
    np.testing.assert_allclose(part.numpy(), colors[..., 2:5].numpy(), rtol=0, atol=1e-14)  # channel-independent
    bg = torch.linspace(0.1, 0.9, 7, dtype=torch.float64)[None]  # [C, D]
    with_bg, _, _ = _render(scene, 24, 20, backgrounds=bg)
    np.testing.assert_allclose(with_bg.numpy(), (colors + (1 - alphas) * bg[:, None, None]).numpy(), rtol=0, atol=1e-14)
    per_camera = scene["colors"].expand(1, 80, 7)  # [C, N, D] colours are taken as well
    again, _, _ = _render({**scene, "colors": per_camera}, 24, 20)
    assert torch.equal(again, colors)


def test_several_cameras_and_strategy_meta() -> None:
    scene = {k: v.float() for k, v in random_scene(50, 7).items()}
    scene["means"].requires_grad_(True)
    views = torch.cat([camera(20, 16, torch.float32, yaw)[0] for yaw in (0.0, 0.15)])
    Ks = camera(20, 16, torch.float32)[1].expand(2, 3, 3)
    out, _, meta = rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], views, Ks, 20, 16
    )
    for c in range(2):
        single, _, _ = rasterize(
            scene["means"],
            scene["quats"],
            scene["scales"],
            scene["opacities"],
            scene["colors"],
            views[c : c + 1],
            Ks[c : c + 1],
            20,
            16,
        )
        torch.testing.assert_close(out[c : c + 1], single, rtol=0, atol=1e-6)  # float32 segment bases differ
    assert meta["radii"].shape == (2, 50, 2) and meta["radii"].dtype == torch.int32
    assert meta["means2d"].shape == (2, 50, 2) and meta["n_cameras"] == 2 and meta["gaussian_ids"] is None
    meta["means2d"].retain_grad()
    out.sum().backward()
    visible = (meta["radii"] > 0).all(-1)
    assert meta["means2d"].grad.abs().sum(-1)[~visible].eq(0).all()  # culled Gaussians get no 2D gradient
    assert meta["means2d"].grad.abs().sum() > 0


def test_empty_view() -> None:
    scene = random_scene(5, 8)
    scene["means"][:, 2] = -2.0  # all behind the camera
    out, alpha, meta = _render(scene, 8, 6, backgrounds=torch.ones(1, 3, dtype=torch.float64))
    assert meta["n_pairs"] == 0 and alpha.eq(0).all() and out.eq(1).all()


def test_row_bands_give_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large views are paired in bands of rows (bounded memory); the result must not depend on the banding."""
    from panst3r_engine.splats import _torch_render

    scene = random_scene(120, 10, channels=4)
    whole, whole_alpha, meta = _render(scene, 40, 30)
    monkeypatch.setattr(_torch_render, "PAIR_BUDGET", 300)  # about 1-2 image rows per band
    banded, banded_alpha, banded_meta = _render(scene, 40, 30)
    assert banded_meta["n_pairs"] == meta["n_pairs"]
    # Same pairs in the same order; only the float64 cumsum bases of the pruning pass differ.
    np.testing.assert_allclose(banded.numpy(), whole.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(banded_alpha.numpy(), whole_alpha.numpy(), rtol=0, atol=1e-12)
