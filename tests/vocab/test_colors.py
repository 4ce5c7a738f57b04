"""Class colours: CIEDE2000 against the published test data, the palette, and distinctness in a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from panst3r_engine.bundle.read import read_bundle
from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.eval.scene_layout import SYNTHETIC_CLASSES
from panst3r_engine.vocab.colors import (
    KEEP_DISTANCE,
    PALETTE,
    _official_colors,
    class_colors,
    preferred_slot,
    uses_official_colors,
)
from panst3r_engine.vocab.colorspace import ciede2000, srgb_to_lab
from panst3r_engine.vocab.vocabularies import load_vocabulary

# Sharma, Wu, Dalal (2005), Table 1: L1 a1 b1, L2 a2 b2, CIEDE2000 (rounded to 4 decimals).
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]
SCANNETPP = load_vocabulary("scannetpp").names


def min_distance(colors) -> float:
    """Smallest CIEDE2000 between two of the colours."""
    lab = srgb_to_lab(np.asarray(colors, dtype=np.float64))
    dist = ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(dist, np.inf)
    return float(dist.min())


def test_ciede2000_matches_the_published_test_pairs() -> None:
    pairs = np.array(SHARMA_PAIRS)
    np.testing.assert_allclose(ciede2000(pairs[:, :3], pairs[:, 3:6]), pairs[:, 6], rtol=0, atol=5e-5)
    np.testing.assert_allclose(ciede2000(pairs[:, 3:6], pairs[:, :3]), pairs[:, 6], rtol=0, atol=5e-5)  # symmetric


def test_srgb_to_lab_known_values() -> None:
    np.testing.assert_allclose(srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab([0, 0, 0]), [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(srgb_to_lab([255, 0, 0]), [53.2408, 80.0925, 67.2032], atol=1e-3)


def test_palette_is_the_documented_farthest_point_sample() -> None:
    """PALETTE regenerates from its recipe, and every colour keeps clear of black, white and grey."""
    steps = np.arange(0, 256, 15)
    rgb = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    lab = srgb_to_lab(rgb)
    keep = (lab[:, 0] >= 35) & (lab[:, 0] <= 85) & (np.hypot(lab[:, 1], lab[:, 2]) >= 20)
    rgb, lab = rgb[keep], lab[keep]
    chosen, nearest = [0], ciede2000(lab, lab[0])
    while len(chosen) < len(PALETTE):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ciede2000(lab, lab[chosen[-1]]))
    assert [f"{r:02x}{g:02x}{b:02x}" for r, g, b in rgb[chosen]] == list(PALETTE)


@pytest.mark.parametrize("count, threshold", [(5, 20.0), (10, 20.0), (15, 19.0), (20, 16.0)])
def test_present_scannetpp_classes_are_distinct(count: int, threshold: float) -> None:
    """Measured over 100 random scenes: worst minimum 20.1 (5 and 10 classes), 19.7 (15), 16.3 (20); 25 here."""
    rng = np.random.default_rng(0)
    for _ in range(25):
        present = sorted(rng.choice(len(SCANNETPP), count, replace=False).tolist())
        colors = class_colors(SCANNETPP, present, "scannetpp")
        assert min_distance([colors[i] for i in present]) >= threshold


def test_bundle_of_the_scannetpp_vocabulary_has_distinct_classes(tmp_path: Path) -> None:
    """The writer fills the colours of a manifest's classes; the classes its segments use are >= 20 apart."""
    from tests.bundle_utils import make_bundle_inputs

    manifest, points, panoptic, photos = make_bundle_inputs()
    used = ["wall", "chair", "sofa", "ceiling lamp", "table", "door", "plant", "monitor"]
    manifest["classes"] = [{"id": i, "name": n, "isthing": True} for i, n in enumerate(SCANNETPP)]
    seg_ids = [s["id"] for s in manifest["segments"]]
    manifest["segments"] = [
        {**s, "class_id": SCANNETPP.index(used[k % len(used)])} for k, s in enumerate(manifest["segments"])
    ]
    assert len(seg_ids) >= 4
    m = read_bundle(write_bundle(tmp_path / "b", manifest, points, panoptic, photos)).manifest
    present = {s["class_id"] for s in m["segments"]}
    assert min_distance([c["color"] for c in m["classes"] if c["id"] in present]) >= 20.0


def test_ground_truth_scene_classes_are_distinct() -> None:
    """The 14 classes of the synthetic ground-truth rooms (all present): measured minimum 20.5 (was 1.3)."""
    names = [name for name, _ in SYNTHETIC_CLASSES]
    assert min_distance(class_colors(names, range(len(names)))) >= 20.0


def test_colours_depend_on_names_not_order() -> None:
    names = ["wall", "chair", "sofa", "table lamp", "floor"]
    first = dict(zip(names, class_colors(names, range(5))))
    again = dict(zip(names[::-1], class_colors(names[::-1], range(5))))
    assert first == again
    assert class_colors(["Chair "]) == class_colors(["chair"])


def test_a_class_keeps_its_preferred_colour_unless_it_would_be_confused() -> None:
    (alone,) = class_colors(["chair"])
    assert f"{alone[0]:02x}{alone[1]:02x}{alone[2]:02x}" == PALETTE[preferred_slot("chair")]
    names = ["chair", "sofa", "wall"]
    colors = class_colors(names, range(3))
    kept = 0
    for name, color in zip(names, colors):
        (preferred,) = class_colors([name])
        placed_before = [c for n, c in zip(names, colors) if n < name]  # placed in sorted order
        if all(min_distance([preferred, c]) >= KEEP_DISTANCE for c in placed_before):
            assert color == preferred
            kept += 1
        else:
            assert color != preferred
    assert kept >= 1
    # classes the result does not use never push the present ones off their colours
    with_absent = class_colors(SCANNETPP, [SCANNETPP.index(n) for n in names])
    assert [with_absent[SCANNETPP.index(n)] for n in names] == colors


def test_official_colours_for_the_coco_and_ade20k_vocabularies() -> None:
    for preset in ("coco", "ade20k"):
        names = load_vocabulary(preset).names
        official = _official_colors()
        assert class_colors(names, [0, 1], preset) == [official[n.strip().lower()] for n in names]
    assert class_colors(["person"], vocabulary="coco") == [(220, 20, 60)]
    assert uses_official_colors("coco+ade20k") and not uses_official_colors("scannetpp")
    assert not uses_official_colors("") and not uses_official_colors("/tmp/coco.txt")
    assert class_colors(["wall"], vocabulary="scannetpp") != [official["wall"]]  # ADE's grey is not reused


@pytest.mark.parametrize("preset", ["coco", "scannetpp"])
def test_pipeline_manifest_colours_follow_the_vocabulary(preset: str) -> None:
    """The pipeline's class list gets official colours for COCO, distinct ones around the segments for
    ScanNet++ (the same rule the writer uses)."""
    from panst3r_engine.pipeline.assemble import _classes
    from panst3r_engine.pipeline.reconstruction import Reconstruction, Segment
    from panst3r_engine.vocab.embeddings import resolve_class_embeddings

    vocab = resolve_class_embeddings(preset, "random", 8)
    assert vocab.source == preset
    segments = [Segment(1, 0, 0.9, 0), Segment(2, 5, 0.8, 1), Segment(3, 9, 0.7, 2)]
    recon = Reconstruction([], [], None, [], segments, vocab, [0], "standard_v2")
    colors = [tuple(c["color"]) for c in _classes(recon)]
    assert colors == class_colors(vocab.names, [0, 5, 9], preset)
    if preset == "coco":
        assert colors[0] == (220, 20, 60)  # person
    else:
        assert min_distance([colors[0], colors[5], colors[9]]) >= 20.0
