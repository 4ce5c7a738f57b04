"""Max/mean absolute difference of every parity-fixture array, per case (a table).

Usage: python benchmarks/parity_report.py [--parity ../shared/parity]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panst3r_engine.model.configs import model_config  # noqa: E402
from panst3r_engine.model.inference import activate_pointmaps, run_inference  # noqa: E402
from panst3r_engine.model.panst3r import PanSt3R  # noqa: E402
from tests.parity_utils import fill_tensor, load_case, load_parity_images  # noqa: E402


def ours(out) -> dict[str, np.ndarray]:
    f = out.features
    stack = torch.stack(out.pred_masks)
    flat = stack.flatten(2)
    raw = torch.stack(out.pointmaps_raw)
    pts3d, _, conf = activate_pointmaps(raw)
    mf = f["mask_feats"][0]
    return {
        "must3r_enc_tokens_v0": f["enc_tokens"][0],
        "dino_feats_v0": f["dino_feats"][0],
        "must3r_dec_feats_v0": f["dec_feats"][0],
        "pointmaps_raw": raw,
        "pts3d": pts3d,
        "conf": conf,
        "upscaler_fpn_v0": f["fpn"][0],
        "upscaler_mask_feats_v0_first_channels": mf[:8],
        "upscaler_mask_feats_v0_channel_mean": mf.flatten(1).mean(-1),
        "upscaler_mask_feats_v0_channel_std": mf.flatten(1).std(-1),
        "pred_logits": out.pred_logits,
        "out_queries": out.out_queries,
        "pred_masks_first_queries": stack[:, :8],
        "pred_masks_query_mean": flat.mean(-1),
        "pred_masks_query_std": flat.std(-1),
        "pred_masks_query_min": flat.min(-1).values,
        "pred_masks_query_max": flat.max(-1).values,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parity", default=str(ROOT.parent / "shared" / "parity"))
    parity = Path(parser.parse_args().parity)
    images = list(load_parity_images(parity))
    print(f"{'case':<15}{'array':<42}{'max abs':>11}{'mean abs':>11}{'max |ref|':>10}")
    for version in ("v1", "v2"):
        with torch.device("meta"):
            model = PanSt3R(model_config(version))
        model.load_state_dict({k: fill_tensor(k, v.shape) for k, v in model.state_dict().items()}, assign=True)
        model.eval()
        for case in ("all_kf", "partial_kf"):
            ref, meta = load_case(parity, f"{case}_{version}")
            out = run_inference(
                model,
                images,
                torch.from_numpy(ref["class_embeddings"]),
                num_keyframes=meta["case"]["num_keyframes"],
                keep_features=True,
            )
            near = int((out.attention_margin < 2e-6).sum())
            for name, value in ours(out).items():
                d = np.abs(value.numpy().astype(np.float64) - ref[name])
                label = f"{case}_{version}"
                print(f"{label:<15}{name:<42}{d.max():>11.2e}{d.mean():>11.2e}{np.abs(ref[name]).max():>10.3g}")
            print(f"{case + '_' + version:<15}{'queries with near-tie attention masks':<42}{near:>11d}")


if __name__ == "__main__":
    main()
