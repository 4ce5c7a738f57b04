"""The service's bridge to :mod:`panst3r_engine.splats`: is it available, and novel views on request.

Fitting itself is a pipeline stage (``JobOptions.splats``), so a job's splats are
published atomically with its bundle.

The splats module (gsplat) is optional, so it is imported only when used: an
engine without it still runs jobs and answers 501 to render requests.
"""

from __future__ import annotations

import base64
import importlib
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from panst3r_engine.bundle.spec import encode_panoptic
from panst3r_engine.service.errors import ApiError

SPLATS_FILE = "splats.ply"
MAX_SIDE = 4096
# Bounds of one render call (512x384 took 80 s and 6.8 GB on a CPU; 8192^2 ran past 240 s): the image size
# and the Gaussians rendered are checked before anything is loaded, and renders run one at a time on the job
# worker (the device's one queue). Two sets: a GPU engine, and a CPU one, which is ~100x slower; on a CPU the
# product pixels x Gaussians ("work") is bounded too (512x384 x ~300k Gaussians took 80 s: ~6e10).
RENDER_LIMITS = {
    "cuda": {"pixels": 4096 * 2048, "gaussians": 4_000_000, "work": None},
    "cpu": {"pixels": 1024 * 768, "gaussians": 1_000_000, "work": 2.5e10},
}
PLY_HEADER_BYTES = 64 * 1024
UNAVAILABLE = (
    "this engine cannot make or render Gaussian splats (its panst3r_engine.splats module or gsplat is missing)"
)


def _splats_function(name: str):
    """``panst3r_engine.splats.<name>``, or 501 when this engine has no splats support."""
    try:
        module = importlib.import_module("panst3r_engine.splats")
    except ImportError as exc:
        raise ApiError(501, "splats_unavailable", f"{UNAVAILABLE}: {exc}") from exc
    function = getattr(module, name, None)
    if function is None:
        raise ApiError(501, "splats_unavailable", f"{UNAVAILABLE}: it has no {name}()")
    return function


def check_splats_available() -> None:
    """Refuse (501) a job asking for splats when this engine cannot make them."""
    _splats_function("add_splats_to_bundle")


def render_limits(device: str) -> dict:
    """The render bounds for an engine on ``device`` ('cuda:1' -> the GPU set; cpu and mps -> the CPU set)."""
    return dict(RENDER_LIMITS["cuda" if str(device).startswith("cuda") else "cpu"])


def check_render(bundle: Path, body: object, limits: dict | None = None) -> tuple:
    """Everything a render request is refused for, decided before any work: the camera (400), the image size
    (400), the splats (409) and their number (422). Returns the parsed camera."""
    camera = parse_camera(body, (limits or {}).get("pixels"))
    if not (bundle / SPLATS_FILE).is_file():
        raise ApiError(409, "no_splats", 'this job has no splats; submit it again with "splats": true')
    most = (limits or {}).get("gaussians")
    count = splat_count(bundle / SPLATS_FILE)
    if most is not None and count is not None and count > most:
        raise ApiError(
            422,
            "too_many_splats",
            f"this job has {count} Gaussian splats, more than the {most} this "
            "engine renders in one call; run the job again with fewer splat steps, or render on a "
            "GPU engine",
        )
    work = (limits or {}).get("work")
    if work and count and count * camera[2] * camera[3] > work:
        side = int((work / count / (camera[2] * camera[3])) ** 0.5 * 100)
        raise _bad(
            f"a {camera[2]}x{camera[3]} view of {count} Gaussian splats is more than this engine renders in "
            f"one call on its CPU; lower the render resolution to about {max(side, 1)}% (or use a GPU engine)"
        )
    return camera


def splat_count(path: Path) -> int | None:
    """The vertex count in a PLY header (None when the header names none)."""
    with open(path, "rb") as fh:
        head = fh.read(PLY_HEADER_BYTES)
    for line in head.split(b"end_header", 1)[0].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == [b"element", b"vertex"] and parts[2].isdigit():
            return int(parts[2])
    return None


def render(bundle: Path, body: object, limits: dict | None = None) -> dict:
    """``POST /v1/jobs/{id}/render``: RGB and COCO-panoptic label PNGs (base64) of one camera."""
    return render_camera(bundle, check_render(bundle, body, limits))


def render_camera(bundle: Path, camera: tuple) -> dict:
    """Render a camera :func:`check_render` accepted (the slow part: run it on the job worker)."""
    K, cam_to_world, width, height = camera
    render_view = _splats_function("render_view")
    rgb, labels = render_view(bundle, K, cam_to_world, width, height)
    rgb, labels = np.asarray(rgb), np.asarray(labels)
    if rgb.shape != (height, width, 3) or labels.shape != (height, width):
        raise RuntimeError(f"render_view returned {rgb.shape} and {labels.shape} for a {width}x{height} view")
    return {
        "rgb_png": _png_base64(rgb.astype(np.uint8)),
        "labels_png": _png_base64(encode_panoptic(labels)),
        "width": width,
        "height": height,
    }


def parse_camera(body: object, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Check a render request: ``K`` 3x3, ``cam_to_world`` 4x4 (OpenCV axes), ``width``/``height`` pixels
    (each at most MAX_SIDE, and width x height at most ``max_pixels``)."""
    if not isinstance(body, dict):
        raise _bad("the render request must be a JSON object with K, cam_to_world, width and height")
    unknown = set(body) - {"K", "cam_to_world", "width", "height"}
    if unknown:
        raise _bad(f"unknown render field {sorted(unknown)[0]!r}; send K, cam_to_world, width and height")
    K = _matrix(body.get("K"), "K", 3)
    cam_to_world = _matrix(body.get("cam_to_world"), "cam_to_world", 4)
    sizes = [body.get("width"), body.get("height")]
    for name, value in zip(("width", "height"), sizes, strict=True):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
            raise _bad(f"{name} must be an integer number of pixels from 1 to {MAX_SIDE}")
    if max_pixels is not None and sizes[0] * sizes[1] > max_pixels:
        raise _bad(
            f"a {sizes[0]}x{sizes[1]} view is more than the {max_pixels} pixels this engine renders in one "
            "call; lower the render resolution (or its percentage)"
        )
    return K, cam_to_world, sizes[0], sizes[1]


def _matrix(value: object, name: str, n: int) -> np.ndarray:
    ok = (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(row, list) and len(row) == n for row in value)
        and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for row in value for x in row
        )
    )
    if not ok:
        raise _bad(f"{name} must be a {n}x{n} list of finite numbers (rows first)")
    return np.array(value, dtype=np.float64)


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
