"""The bridge to the splats module: camera checks, output checks, fitting as a job stage."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.rendering import check_splats_available, parse_camera, render

CAMERA = {"K": [[100, 0, 16], [0, 100, 12], [0, 0, 1]], "cam_to_world": np.eye(4).tolist(), "width": 32, "height": 24}


def test_camera_is_parsed_to_arrays():
    K, cam_to_world, width, height = parse_camera(CAMERA)
    assert K.shape == (3, 3) and K.dtype == np.float64 and cam_to_world.shape == (4, 4)
    assert (width, height) == (32, 24)
    with pytest.raises(ApiError, match="finite"):
        parse_camera({**CAMERA, "K": [[float("nan")] * 3] * 3})


def test_wrongly_sized_render_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "splats.ply").write_bytes(b"ply")
    module = types.ModuleType("panst3r_engine.splats")
    module.render_view = lambda *a: (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int32))
    monkeypatch.setitem(sys.modules, "panst3r_engine.splats", module)
    with pytest.raises(RuntimeError, match="for a 32x24 view"):
        render(tmp_path, CAMERA)


def test_missing_function_is_501(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "panst3r_engine.splats", types.ModuleType("panst3r_engine.splats"))
    with pytest.raises(ApiError) as info:
        check_splats_available()
    assert info.value.status == 501 and "add_splats_to_bundle" in info.value.message
