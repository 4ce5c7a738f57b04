"""A pure-PyTorch Gaussian rasteriser that follows gsplat 1.5.3's CUDA rules, for machines without a GPU.

gsplat's own kernels (and its "pure-torch" ``_rasterization``) need CUDA. Only the projection, covariance and
SH pieces of ``gsplat.cuda._torch_impl`` run on CPU, so this module reuses them and adds the two missing parts:

* a pair finder (no grad): for every visible Gaussian, the pixels whose centres (+0.5) lie inside the ellipse
  where ``opacity * exp(-sigma) >= 1/255``, found row by row by solving the quadratic in x (no bounding-box
  corners). Pairs are sorted by one int64 key ``pixel * N + depth rank``; pairs behind each pixel's
  ``T <= 1e-4`` cut-off and skipped pairs are dropped before the differentiable pass.
* a compositor (autograd): ``alpha = min(0.999, o * exp(-sigma))``, front to back, the stop being exclusive as
  in the CUDA kernel. ``log(1 - alpha)`` is accumulated with a float64 cumsum (float32 drifts by up to 0.02 in
  alpha at 50k Gaussians) minus each pixel's segment base, giving the exclusive transmittance.

Outputs and ``meta`` follow ``gsplat.rasterization(..., packed=False)`` so ``DefaultStrategy`` works unchanged.
Pinhole cameras only; no antialiasing, packed mode, absgrad or distortion.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # pairs below this alpha are skipped (gsplat's ALPHA_THRESHOLD)
MAX_ALPHA = 0.999  # alpha is clamped here so T never reaches 0
T_STOP = 1e-4  # a pixel is done once T would drop to this (the contribution that would do it is excluded)
PAIR_BUDGET = 4_000_000  # raw (pixel, Gaussian) pairs sorted at once, about 300 MB of temporaries
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    radius_clip: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection; radii redone as the 1.5.3 CUDA kernel does (opacity-aware extent, cull below 1/255).

    Returns radii [C, N, 2] int32 (0 = culled), means2d [C, N, 2], depths [C, N], conics [C, N, 3] (a, b, c of
    sigma = 0.5 (a dx^2 + c dy^2) + b dx dy) and visible [C, N] bool.
    """
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)  # [N, 3, 3]
    _, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane
    )
    with torch.no_grad():
        a, b, c = conics.unbind(-1)  # [C, N] each
        det_conic = a * c - b * b  # 1 / det(cov2d)
        cov_xx, cov_yy = c / det_conic, a / det_conic
        opac = opacities.detach().expand_as(depths)  # [C, N]
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=3.33)
        rx, ry = torch.ceil(extend * cov_xx.sqrt()), torch.ceil(extend * cov_yy.sqrt())  # [C, N]
        mx, my = means2d.detach().unbind(-1)
        visible = (
            (depths >= near_plane)
            & (depths <= far_plane)
            & (opac >= ALPHA_THRESHOLD)
            & (det_conic > 0)
            & ~((rx <= radius_clip) & (ry <= radius_clip))
            & (mx + rx > 0)
            & (mx - rx < width)
            & (my + ry > 0)
            & (my - ry < height)
            & torch.isfinite(mx)
            & torch.isfinite(my)
        )
        radii = torch.where(visible[..., None], torch.stack([rx, ry], -1), 0.0).to(torch.int32)  # [C, N, 2]
    return radii, means2d, depths, conics, visible


@torch.no_grad()
def _ellipse_rows(
    means2d: Tensor, conics: Tensor, opacities: Tensor, ids: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row spans of one camera: (gaussian [R], row [R], first column [R], columns [R]).

    Each visible Gaussian (``ids`` [G]) gets the image rows whose pixel centres (+0.5) cross its 1/255 ellipse
    and, per row, the columns inside it (the quadratic in x solved exactly). The ellipse is padded slightly
    and each span by one pixel per side so rounding never loses a pixel; the alpha test removes the extras.
    """
    dev = means2d.device
    mx, my = means2d[ids].double().unbind(-1)  # [G]
    a, b, c = conics[ids].double().unbind(-1)
    level = torch.log(opacities[ids].double() / ALPHA_THRESHOLD) * (1 + 1e-6) + 1e-6  # sigma bound, padded
    half_h = torch.sqrt(2.0 * level * a / (a * c - b * b))  # y half-extent of the ellipse
    i0 = torch.ceil(my - half_h - 0.5).clamp(0, height)  # rows whose centre i + 0.5 is inside
    i1 = torch.floor(my + half_h - 0.5).clamp(-1, height - 1)
    nrow = (i1 - i0 + 1).clamp_min(0).long()  # [G]
    row_g = torch.repeat_interleave(torch.arange(len(ids), device=dev), nrow)  # [R]
    start = torch.cumsum(nrow, 0) - nrow
    row_i = i0.long()[row_g] + torch.arange(len(row_g), device=dev) - start[row_g]  # [R]
    dy = my[row_g] - (row_i + 0.5)  # delta = mean - pixel centre, as in the CUDA kernel
    ar, br, cr = a[row_g], b[row_g], c[row_g]
    disc = (br * dy) ** 2 - ar * (cr * dy * dy - 2.0 * level[row_g])  # of 0.5 a dx^2 + b dy dx + 0.5 c dy^2 - L
    root = torch.sqrt(disc.clamp_min(0.0))
    j0 = (torch.ceil(mx[row_g] - (-br * dy + root) / ar - 0.5) - 1).clamp(0, width)  # px = mx - dx
    j1 = (torch.floor(mx[row_g] - (-br * dy - root) / ar - 0.5) + 1).clamp(-1, width - 1)
    ncol = torch.where(disc >= 0, j1 - j0 + 1, 0.0).clamp_min(0).long()  # [R]
    return ids[row_g], row_i, j0.long(), ncol


@torch.no_grad()
def _expand_rows(row_g: Tensor, row_i: Tensor, j0: Tensor, ncol: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """(gaussian [P], pixel [P]) of row spans."""
    pair_row = torch.repeat_interleave(torch.arange(len(row_g), device=row_g.device), ncol)  # [P]
    start = torch.cumsum(ncol, 0) - ncol
    col = j0[pair_row] + torch.arange(len(pair_row), device=row_g.device) - start[pair_row]
    return row_g[pair_row], row_i[pair_row] * width + col


@torch.no_grad()
def _front_pairs(
    gauss: Tensor, pix: Tensor, rank: Tensor, m2d: Tensor, con: Tensor, opa: Tensor, n: int, hw: int, width: int
) -> tuple[Tensor, Tensor]:
    """The contributing pairs, sorted by (pixel, depth): skipped ones and those past T <= 1e-4 dropped.

    All ids are camera-flat (camera * N + gaussian, camera * H*W + pixel); ``rank`` [C*N] is the depth rank.
    """
    order = torch.argsort(pix * n + rank[gauss])
    gauss, pix = gauss[order], pix[order]
    px, py = ((pix % hw) % width).to(m2d.dtype) + 0.5, ((pix % hw) // width).to(m2d.dtype) + 0.5
    alpha, sigma = _alpha(m2d[gauss], con[gauss], opa[gauss], px, py)
    keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    gauss, pix, log1m = gauss[keep], pix[keep], torch.log1p(-alpha[keep].double())
    _, counts = torch.unique_consecutive(pix, return_counts=True)
    log_t = _segment_exclusive(log1m, torch.cumsum(counts, 0) - counts, counts)
    keep = (log_t + log1m) > math.log(T_STOP)  # exclusive stop: keep while T after the pair stays > 1e-4
    return gauss[keep], pix[keep]


def _alpha(m2d: Tensor, con: Tensor, opa: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pair (alpha clamped at 0.999, sigma) from gathered 2D means [P, 2], conics [P, 3], opacities [P]."""
    dx, dy = m2d[:, 0] - px, m2d[:, 1] - py
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    return torch.clamp(opa * torch.exp(-sigma), max=MAX_ALPHA), sigma


def _segment_exclusive(values: Tensor, seg_start: Tensor, counts: Tensor) -> Tensor:
    """Exclusive cumulative sum of ``values`` [P] within consecutive segments, via one global float64 cumsum."""
    total = torch.cumsum(values, 0)
    excl = total - values
    return excl - torch.repeat_interleave(excl[seg_start], counts)


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    max_weight_ids: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """gsplat-compatible rasterisation on any device, differentiable w.r.t. everything but Ks and viewmats.

    Args: as ``gsplat.rasterization`` with ``packed=False``: means [N, 3], quats [N, 4] (wxyz), scales [N, 3]
        and opacities [N] activated, colors [N, D] / [C, N, D] or SH [N, K, 3] with ``sh_degree``,
        viewmats [C, 4, 4] world->camera (OpenCV), Ks [C, 3, 3], backgrounds [C, D].
        max_weight_ids: also return ``meta["max_weight_ids"]`` [C, H, W] int64, the Gaussian with the largest
            blending weight per pixel (-1 where none), for label rendering.
    Returns: colors [C, H, W, D'], alphas [C, H, W, 1], meta (radii [C, N, 2], means2d [C, N, 2], depths,
        conics, width, height, n_cameras, gaussian_ids=None, n_pairs).
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    n, cams, hw = means.shape[0], viewmats.shape[0], width * height
    radii, means2d, depths, conics, visible = _project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d, radius_clip
    )
    if sh_degree is not None:
        campos = torch.linalg.inv(viewmats.detach())[:, :3, 3]  # [C, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        coeffs = colors.expand(cams, *colors.shape[-3:]) if colors.dim() == 3 else colors
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)  # [C, N, 3]
    elif colors.dim() == 2:
        colors = colors.expand(cams, *colors.shape)  # [C, N, D]
    if render_mode in ("D", "ED"):
        colors = depths[..., None]
    elif render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], -1)
    if backgrounds is not None and render_mode != "RGB":
        extra = torch.zeros(cams, 1, dtype=backgrounds.dtype, device=backgrounds.device)
        backgrounds = extra if render_mode in ("D", "ED") else torch.cat([backgrounds, extra], -1)
    chans = colors.shape[-1]

    # Pairs (no grad), camera-flat ids sorted by (camera, pixel, depth rank), found in bands of image rows of
    # at most PAIR_BUDGET raw pairs so close-up views of large Gaussians stay within memory.
    with torch.no_grad():
        opac_cn = opacities.detach().expand(cams, n)  # [C, N]
        m2d, con, opa = means2d.detach().reshape(-1, 2), conics.detach().reshape(-1, 3), opac_cn.reshape(-1)
        rank = torch.empty(cams, n, dtype=torch.long, device=means.device)
        rank.scatter_(
            1,
            torch.argsort(depths.detach(), dim=1, stable=True),
            torch.arange(n, device=means.device).expand(cams, n).contiguous(),
        )
        gauss_l, pix_l = [], []
        for cam in range(cams):
            ids = torch.nonzero(visible[cam]).squeeze(1)
            row_g, row_i, j0, ncol = _ellipse_rows(
                means2d[cam].detach(), conics[cam].detach(), opac_cn[cam], ids, width, height
            )
            per_row = torch.bincount(row_i, weights=ncol.double(), minlength=height).cumsum(0)  # [H]
            band_id = torch.div(per_row, PAIR_BUDGET, rounding_mode="floor").long()  # non-decreasing in the row
            for band in torch.unique(band_id).tolist():
                rows = torch.nonzero(band_id == band).squeeze(1)
                sel = (row_i >= rows[0]) & (row_i <= rows[-1])
                g, p = _expand_rows(row_g[sel] + cam * n, row_i[sel], j0[sel], ncol[sel], width)
                g, p = _front_pairs(g, p + cam * hw, rank.view(-1), m2d, con, opa, n, hw, width)
                gauss_l.append(g)
                pix_l.append(p)
        gauss, pix = torch.cat(gauss_l), torch.cat(pix_l)  # [P]
        px, py = ((pix % hw) % width).to(means.dtype) + 0.5, ((pix % hw) // width).to(means.dtype) + 0.5
        _, counts = torch.unique_consecutive(pix, return_counts=True)
        seg_start = torch.cumsum(counts, 0) - counts

    # Compositing (autograd).
    alpha, _ = _alpha(
        means2d.reshape(-1, 2)[gauss],
        conics.reshape(-1, 3)[gauss],
        opacities.expand(cams, n).reshape(-1)[gauss],
        px,
        py,
    )
    trans = torch.exp(_segment_exclusive(torch.log1p(-alpha.double()), seg_start, counts)).to(alpha.dtype)
    weight = alpha * trans  # [P]
    out_alpha = torch.zeros(cams * hw, dtype=weight.dtype, device=weight.device).index_add(0, pix, weight)
    out = torch.zeros(cams * hw, chans, dtype=colors.dtype, device=weight.device)
    out = out.index_add(0, pix, weight[:, None] * colors.reshape(-1, chans)[gauss])  # [C*H*W, D]
    out, out_alpha = out.view(cams, height, width, chans), out_alpha.view(cams, height, width, 1)
    if backgrounds is not None:
        out = out + (1.0 - out_alpha) * backgrounds[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        out = torch.cat([out[..., :-1], out[..., -1:] / out_alpha.clamp(min=1e-10)], -1)

    meta: dict[str, Any] = {
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "width": width,
        "height": height,
        "n_cameras": cams,
        "gaussian_ids": None,
        "n_pairs": int(gauss.numel()),
    }
    if max_weight_ids:
        meta["max_weight_ids"] = _max_weight_ids(weight.detach(), gauss, pix, cams, n, hw).view(cams, height, width)
    return out, out_alpha, meta


@torch.no_grad()
def _max_weight_ids(weight: Tensor, gauss: Tensor, pix: Tensor, cams: int, n: int, hw: int) -> Tensor:
    """[C*H*W] Gaussian id with the largest blending weight per pixel (frontmost on ties), -1 where none."""
    best = torch.full((cams * hw,), -1.0, dtype=weight.dtype, device=weight.device)
    best = best.scatter_reduce(0, pix, weight, reduce="amax")
    order = torch.arange(len(pix), device=pix.device)
    first = torch.full((cams * hw,), len(pix), dtype=torch.long, device=pix.device)
    first = first.scatter_reduce(0, pix, torch.where(weight == best[pix], order, len(pix)), reduce="amin")
    has = first < len(pix)
    ids = torch.full((cams * hw,), -1, dtype=torch.long, device=pix.device)
    ids[has] = gauss[first[has]] % n
    return ids
