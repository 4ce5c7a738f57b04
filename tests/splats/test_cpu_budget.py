"""On CPU the fit trains on downscaled photos; point pixels must be mapped to that size."""

from __future__ import annotations

import numpy as np

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.splats import add_splats_to_bundle
from panst3r_engine.splats.fit import CPU_TRAIN_SIDE


def test_large_photos_are_fitted_downscaled(tmp_path):
    height, width = 384, 512  # larger than CPU_TRAIN_SIDE, so the photos are downscaled for training
    assert max(height, width) > CPU_TRAIN_SIDE
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height:4, 0:width:4]
    depth = 2.0 + 0.001 * xx
    f = 400.0
    xyz = np.stack([(xx - width / 2) / f * depth, (yy - height / 2) / f * depth, depth], -1).reshape(-1, 3)
    photo = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    pixel = np.stack([xx.ravel(), yy.ravel()], 1)
    points = {
        "xyz": xyz.astype(np.float32),
        "rgb": photo[pixel[:, 1], pixel[:, 0]],
        "conf": np.full(len(xyz), 5, np.float32),
        "segment": np.ones(len(xyz), np.int32),
        "view": np.zeros(len(xyz), np.int16),
        "pixel": pixel.astype(np.uint16),
    }
    K = [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]
    manifest = {
        "model": {"id": "test", "version": "v2", "checkpoint_md5": None},
        "images": [
            {
                "index": 0,
                "file": "a.jpg",
                "stem": "a",
                "original_size": [width, height],
                "processed_size": [width, height],
                "crop_box": [0, 0, width, height],
                "keyframe": True,
            }
        ],
        "cameras": [{"image": 0, "K": K, "cam_to_world": np.eye(4).tolist(), "focal": f, "confidence": 5.0}],
        "classes": [{"id": 0, "name": "wall", "isthing": False}],
        "segments": [{"id": 1, "class_id": 0, "score": 0.9}],
    }
    pan = np.ones((height, width), np.int32)
    bundle = write_bundle(tmp_path / "b", manifest, points, {"a": pan}, {"a": photo})
    add_splats_to_bundle(bundle, steps=2, device="cpu")
    info = read_bundle(bundle).manifest["splats"]
    assert info["count"] > 0 and info["steps"] == 2 and np.isfinite(info["psnr_after"])
