"""Photos over the engine's pixel limit are refused at upload, from their header (nothing is decoded)."""

from __future__ import annotations

import pytest

from tests.pipeline.test_image_limits import png_claiming
from tests.service.conftest import photo_bytes


@pytest.mark.parametrize("side", [20000, 28000])
def test_a_huge_photo_is_refused_at_upload(engine, jobs_dir, side):
    bomb = png_claiming(side, side)
    assert len(bomb) < 2000  # the review's 762 kB PNG, minus the pixel data nobody decodes
    response = engine.submit([("bomb.png", bomb), ("ok.jpg", photo_bytes())])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_image" and f"bomb.png: {side * side // 10**6} MP" in error["message"].replace(
        f"{side}x{side} pixels (", ""
    )
    assert "more than this engine's limit of 100 MP; scale the photo down" in error["message"]
    assert engine.get("/v1/jobs").json()["jobs"] == []


def test_the_limit_is_the_engines_setting(start_engine):
    engine = start_engine(MAX_MEGAPIXELS=0.05)  # 50,000 pixels
    try:
        response = engine.submit([("a.jpg", photo_bytes(320, 240))])  # 76,800 pixels
        assert (
            response.status_code == 422
            and "320x240 pixels (0.077 MP) is more than this engine's limit of 0.05 MP"
            in response.json()["error"]["message"]
        )
        assert engine.submit([("b.jpg", photo_bytes(200, 150))]).status_code == 202
    finally:
        from panst3r_engine.pipeline.images import set_max_pixels

        set_max_pixels(100_000_000)
