"""Gaussian splats from the annotated point cloud: fit, render RGB + panoptic labels, INRIA PLY export.

Public API (used by the pipeline and the HTTP service)::

    fit_splats(bundle_path, steps=300, device="cpu", max_gaussians=200_000, voxel=None, progress=None, seed=0)
        -> SplatModel
    write_splats_ply(model, path) / read_splats_ply(path) -> SplatModel
    render(model, K, cam_to_world, width, height, backend="auto") -> RenderOutput
    render_view(bundle_path, K, cam_to_world, width, height) -> (rgb uint8 [H, W, 3], segment int32 [H, W])
    fit_inputs(SplatInputs(...), ...) -> FitResult      (a job's splats, fitted from memory)
    add_splats_to_bundle(bundle_path, steps, device, progress) -> Path   (re-fit an existing bundle)

Conventions: K in pixels of the image rendered, pixel centres at +0.5 (COLMAP); cam_to_world 4x4 with OpenCV
axes (x right, y down, z forward), as the bundle's manifest stores cameras. On CUDA tensors with gsplat's
kernels available, gsplat renders; everywhere else a pure-torch rasteriser that follows the same rules.
"""

from panst3r_engine.splats.export import SplatsFileError, read_splats_ply, write_splats_ply
from panst3r_engine.splats.fit import (
    FitConfig,
    FitResult,
    SplatInputs,
    SplatsSkipped,
    add_splats_to_bundle,
    fit_bundle,
    fit_inputs,
    fit_splats,
)
from panst3r_engine.splats.init import init_from_bundle, init_from_points
from panst3r_engine.splats.model import SplatModel
from panst3r_engine.splats.render import (
    RenderOutput,
    choose_backend,
    gsplat_cuda_available,
    rasterize,
    render,
    render_view,
)

__all__ = [
    "FitConfig",
    "FitResult",
    "RenderOutput",
    "SplatInputs",
    "SplatModel",
    "SplatsFileError",
    "SplatsSkipped",
    "add_splats_to_bundle",
    "fit_inputs",
    "choose_backend",
    "fit_bundle",
    "fit_splats",
    "gsplat_cuda_available",
    "init_from_bundle",
    "init_from_points",
    "rasterize",
    "read_splats_ply",
    "render",
    "render_view",
    "write_splats_ply",
]
