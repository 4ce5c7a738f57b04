"""A job with its per-view outputs on disk (mask logits in float16) gives the bundle of the all-in-RAM float32
computation: the same cameras and points, and panoptic maps equal up to half-precision rounding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.model.inference import activate_pointmaps, run_inference
from panst3r_engine.model.loading import ModelCache
from panst3r_engine.pipeline.images import load_photos, to_photo_orientation
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.pipeline.run import run_job
from panst3r_engine.postprocess import postprocess
from panst3r_engine.vocab.embeddings import resolve_class_embeddings
from tests.pipeline.conftest import textured

# float16 keeps mask logits to 2^-11 relative: a pixel changes segment only within that margin of a threshold
# or a tie: over these 5 small views a few pixels at most; segments and classes must not change.
MAX_CHANGED_PIXELS = 1e-3


def _float32_reference(paths, opts: JobOptions, method: str):
    """The pre-streaming pipeline: every view's outputs in RAM, float32, post-processed all together."""
    photos = load_photos(paths, opts.resize)
    loaded = ModelCache().get(opts.weights, opts.device, Progress())
    vocab = resolve_class_embeddings(opts.vocab, opts.vocab_embeddings, loaded.model.text_dim, opts.seed)
    raw = run_inference(loaded.model, [p.tensor for p in photos], vocab.vectors, num_keyframes=opts.keyframes)
    masks = [to_photo_orientation(m, p.transposed, (1, 2)) for m, p in zip(raw.pred_masks, photos)]
    pointmaps = [to_photo_orientation(m, p.transposed, (0, 1)) for m, p in zip(raw.pointmaps_raw, photos)]
    shapes = [p.rgb.shape[:2] for p in photos]
    return postprocess(raw.pred_logits, masks, shapes, method=method), pointmaps


class ScratchWatcher(Progress):
    """Lists the job's scratch files when post-processing starts (they hold every view's network outputs)."""

    def __init__(self, parent) -> None:
        super().__init__()
        self.parent, self.seen = parent, set()

    def show(self) -> None:
        if self.stage == "postprocess" and not self.seen:
            self.seen = {f.name for d in self.parent.glob(".out.tmp-*") for f in d.iterdir()}


@pytest.mark.slow  # two tiny jobs: ~10 s of CPU, 35-45 s wall on the loaded 2-core box
def test_streamed_job_matches_the_float32_all_in_ram_result(tiny_checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):  # one portrait: it runs transposed, so its outputs are turned back on the way to disk
        w, h = (48, 64) if i == 3 else (64, 48)
        Image.fromarray(textured(w, h, 40 + i)).save(folder / f"p{i}.png")
    paths = sorted(folder.iterdir())
    opts = JobOptions(
        weights=str(tiny_checkpoint), vocab_embeddings="random", device="cpu", resize="none", keyframes=3
    ).validate()
    watcher = ScratchWatcher(tmp_path)
    result = run_job(paths, tmp_path / "out", opts, watcher)
    assert {f"{kind}-{v:06d}.npy" for kind in ("inputs", "masks", "pointmaps") for v in range(5)} <= watcher.seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]  # the scratch folder is gone
    bundle = read_bundle(result.bundle)
    expected, pointmaps = _float32_reference(paths, opts, bundle.manifest["options"]["postprocess"])

    got = [(s["query"], s["class_id"]) for s in bundle.manifest["segments"]]
    assert got == [(s["query"], s["category_id"]) for s in expected.segments] and got
    changed = sum(int((bundle.panoptic(stem) != pan).sum()) for stem, pan in zip(bundle.stems, expected.pan))
    assert changed <= MAX_CHANGED_PIXELS * sum(p.size for p in expected.pan)

    # Geometry never goes through half precision: every point is the float32 pointmap's, bit for bit.
    points = bundle.points
    for v, raw in enumerate(pointmaps):
        xyz = activate_pointmaps(raw.float())[0].numpy()
        rows = points["view"] == v
        x, y = points["pixel"][rows].T.astype(int)
        np.testing.assert_array_equal(points["xyz"][rows], xyz[y, x])


def test_a_lone_photo_runs_as_a_pair_and_keeps_one_view(tiny_checkpoint, tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(textured(64, 48, 7)).save(path)
    opts = JobOptions(weights=str(tiny_checkpoint), vocab_embeddings="random", device="cpu", resize="none")
    result = run_job([path], tmp_path / "out", opts.validate())
    bundle = read_bundle(result.bundle)
    assert bundle.stems == ["one"] and set(np.unique(bundle.points["view"])) <= {0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "out"]
