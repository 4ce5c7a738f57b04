"""PanopticDecoder: checkpoint key layout, tiny-config shapes, and fixture parity of the
per-view encoding (upscaler) and of the prediction heads on the recorded ``out_queries``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from panst3r_engine.model.configs import panst3r_v1, panst3r_v2
from panst3r_engine.model.panoptic_decoder import PanopticDecoder
from tests.parity_utils import fill_module, load_case, load_manifest, load_parity_images

FACTORIES = {"v1": panst3r_v1, "v2": panst3r_v2}
PREFIX = "panoptic_decoder."
CASES = ["all_kf_v1", "partial_kf_v1", "all_kf_v2", "partial_kf_v2"]
# (max abs, mean abs) from the parity README's suggested acceptance.
TOL = {
    "v1": {"fpn": (1e-3, None), "mask_feats": (1e-4, None), "pred_masks": (1e-4, None), "pred_logits": (1e-5, None)},
    "v2": {"fpn": (1e-3, None), "mask_feats": (5e-2, 2e-3), "pred_masks": (5e-2, 2e-3), "pred_logits": (1e-3, None)},
}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_state_dict_matches_manifest(parity_dir: Path, version: str):
    with torch.device("meta"):
        decoder = PanopticDecoder(FACTORIES[version]().panoptic, concat_dim=2816)
    ours = [(PREFIX + k, list(t.shape)) for k, t in decoder.state_dict().items()]
    ref = [(k, list(shape)) for k, shape, dtype in load_manifest(parity_dir, version) if k.startswith(PREFIX)]
    assert ours == ref
    assert all(t.dtype == torch.float32 for t in decoder.state_dict().values())


def test_norm_eps_match_manifest(parity_dir: Path):
    for version in ("v1", "v2"):
        manifest = json.loads((parity_dir / "manifests" / f"panst3r_{version}_state_dict.json").read_text())
        with torch.device("meta"):
            decoder = PanopticDecoder(FACTORIES[version]().panoptic, concat_dim=2816)
        norms = {
            PREFIX + n: m for n, m in decoder.named_modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))
        }
        expected = {k: v for k, v in manifest["norm_modules"].items() if k.startswith(PREFIX)}
        assert set(norms) == set(expected)
        for name, (kind, eps, *groups) in expected.items():
            assert type(norms[name]).__name__ == kind and norms[name].eps == eps
            if groups:
                assert norms[name].num_groups == groups[0]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tiny_end_to_end_shapes(version: str):
    cfg = FACTORIES[version](tiny=True)
    mt = cfg.panoptic.mask_transformer
    torch.manual_seed(0)
    decoder = PanopticDecoder(cfg.panoptic, cfg.concat_dim).eval()
    sizes = [(64, 96), (48, 64)]
    fpn, feats = [], []
    with torch.no_grad():
        for h, w in sizes:
            grid = torch.cartesian_prod(torch.arange(h // 16), torch.arange(w // 16))[None]
            tokens = torch.randn(1, grid.shape[1], cfg.concat_dim)
            f, m = decoder.encode_views(tokens, grid, torch.rand(1, 3, h, w) * 2 - 1)
            assert f.shape == (1, mt.hidden_dim, h // 16, w // 16)
            assert m.shape == (1, mt.mask_dim, h // 2, w // 2)
            fpn.append(f[0])
            feats.append(m[0])
        emb = torch.nn.functional.normalize(torch.randn(5, mt.lang_dim), dim=-1)
        out = decoder.decode(fpn, feats, emb)
        extra = decoder.predict(out["out_queries"], feats[:1], emb)
    assert out["pred_logits"].shape == (mt.num_queries, 5)
    assert [tuple(m.shape) for m in out["pred_masks"]] == [(mt.num_queries, h // 2, w // 2) for h, w in sizes]
    assert out["out_queries"].shape == (mt.num_queries, mt.hidden_dim)
    assert torch.equal(extra["pred_masks"][0], out["pred_masks"][0])


def test_encode_views_rejects_wrong_grid():
    cfg = panst3r_v1(tiny=True)
    decoder = PanopticDecoder(cfg.panoptic, cfg.concat_dim)
    with pytest.raises(ValueError):
        decoder.encode_views(
            torch.randn(1, 5, cfg.concat_dim), torch.zeros(1, 5, 2, dtype=torch.long), torch.zeros(1, 3, 32, 48)
        )


@functools.lru_cache(maxsize=1)
def _filled_decoder(version: str) -> PanopticDecoder:
    """Full-size decoder with the fixtures' synthetic weights (one version cached at a time)."""
    decoder = PanopticDecoder(FACTORIES[version]().panoptic, concat_dim=2816).eval()
    fill_module(decoder, prefix=PREFIX)
    return decoder


def _check(name: str, ours: torch.Tensor, ref: np.ndarray, tol: tuple[float, float | None], report: dict):
    diff = (ours.detach().double() - torch.from_numpy(ref).double()).abs()
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {ref.shape}"
    report[name] = (diff.max().item(), diff.mean().item())
    assert diff.max() <= tol[0], f"{name}: max abs diff {diff.max():.3e} > {tol[0]}"
    if tol[1] is not None:
        assert diff.mean() <= tol[1], f"{name}: mean abs diff {diff.mean():.3e} > {tol[1]}"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_view0_parity(parity_dir: Path, case: str):
    """encode_views on view 0's recorded backbone features, then the heads on ``out_queries``.

    View 0 is a keyframe in every case, so its masks are the heads applied to the final
    queries with its own mask features; that pins decoder_norm / mask_embed / lang_embed /
    cls_logit_scale without needing the other views.
    """
    version = case[-2:]
    arrays, _ = load_case(parity_dir, case)
    tol = TOL[version]
    tokens = np.concatenate(
        [arrays["must3r_enc_tokens_v0"], arrays["must3r_dec_feats_v0"], arrays["dino_feats_v0"]], axis=-1
    )
    tokens = torch.from_numpy(tokens)[None]
    pos = torch.from_numpy(arrays["must3r_enc_pos_v0"])[None]
    image = load_parity_images(parity_dir)[:1]
    decoder = _filled_decoder(version)
    report: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        fpn, feats = decoder.encode_views(tokens, pos, image)
        flat = feats[0].flatten(1)
        _check("upscaler_fpn_v0", fpn[0], arrays["upscaler_fpn_v0"], tol["fpn"], report)
        _check(
            "upscaler_mask_feats_v0_first_channels",
            feats[0, :8],
            arrays["upscaler_mask_feats_v0_first_channels"],
            tol["mask_feats"],
            report,
        )
        _check(
            "upscaler_mask_feats_v0_channel_mean",
            flat.mean(1),
            arrays["upscaler_mask_feats_v0_channel_mean"],
            tol["mask_feats"],
            report,
        )
        _check(
            "upscaler_mask_feats_v0_channel_std",
            flat.std(1),
            arrays["upscaler_mask_feats_v0_channel_std"],
            tol["mask_feats"],
            report,
        )
        pred = decoder.predict(
            torch.from_numpy(arrays["out_queries"]), [feats[0]], torch.from_numpy(arrays["class_embeddings"])
        )
    masks = pred["pred_masks"][0]
    _check("pred_logits", pred["pred_logits"], arrays["pred_logits"], tol["pred_logits"], report)
    _check("pred_masks_first_queries[0]", masks[:8], arrays["pred_masks_first_queries"][0], tol["pred_masks"], report)
    index = torch.from_numpy(arrays["pred_masks_sample_index"])
    _check(
        "pred_masks_samples[0]", masks.flatten(1)[:, index], arrays["pred_masks_samples"][0], tol["pred_masks"], report
    )
    stats = {
        "mean": masks.flatten(1).mean(1),
        "std": masks.flatten(1).std(1),
        "min": masks.flatten(1).min(1).values,
        "max": masks.flatten(1).max(1).values,
    }
    for key, value in stats.items():
        _check(f"pred_masks_query_{key}[0]", value, arrays[f"pred_masks_query_{key}"][0], tol["pred_masks"], report)
    print(case, {k: f"max {a:.2e} mean {b:.2e}" for k, (a, b) in report.items()})
