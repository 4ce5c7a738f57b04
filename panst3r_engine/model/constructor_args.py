"""Safe reading of the constructor strings stored in an official checkpoint's ``args``.

The official loader ``eval``s strings such as
``PanopticDecoder(upscaler=PixelShuffleUpscaler(2816), label_mode='sigmoid')``.
We never execute them: :func:`parse_call` turns one into a :class:`Call`
tree using :mod:`ast` with literals only, and :func:`config_from_args` maps the
tree onto our size dataclasses.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.model.configs import (
    DecoderConfig,
    DinoConfig,
    EncoderConfig,
    InputMixerConfig,
    LoftUpConfig,
    MaskTransformerConfig,
    ModelConfig,
    PanopticConfig,
    PixelShuffleConfig,
)


class ConstructorError(PanSt3RError):
    """A constructor string we cannot (or will not) interpret."""

    code = "weights"


@dataclass
class Call:
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None, position: int | None = None) -> Any:
        if key in self.kwargs:
            return self.kwargs[key]
        if position is not None and position < len(self.args):
            return self.args[position]
        return default


def _value(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Call):
        return _call(node, text)
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        snippet = ast.get_source_segment(text, node)
        raise ConstructorError(f"unsupported expression {snippet!r} in {text!r}") from exc


def _call(node: ast.Call, text: str) -> Call:
    if not isinstance(node.func, ast.Name):
        raise ConstructorError(f"unsupported constructor in {text!r}")
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ConstructorError(f"'**' arguments are not supported in {text!r}")
        kwargs[kw.arg] = _value(kw.value, text)
    return Call(node.func.id, [_value(a, text) for a in node.args], kwargs)


def parse_call(text: str) -> Call:
    """``"Name(a, k=v, ...)"`` -> :class:`Call`; only literals and nested calls allowed."""
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ConstructorError(f"cannot parse constructor string {text!r}") from exc
    if not isinstance(tree.body, ast.Call):
        raise ConstructorError(f"expected a constructor call, got {text!r}")
    return _call(tree.body, text)


def _expect(call: Call, *names: str) -> None:
    if call.name not in names:
        raise ConstructorError(f"unsupported module {call.name}(...); expected {' or '.join(names)}")


def encoder_config(call: Call) -> EncoderConfig:
    _expect(call, "Dust3rEncoder")
    if call.get("patch_embed", "PatchEmbedDust3R") != "PatchEmbedDust3R":
        raise ConstructorError(f"unsupported MUSt3R patch embedding {call.get('patch_embed')!r}")
    if call.get("pos_embed", "RoPE100") != "RoPE100":
        raise ConstructorError(f"unsupported MUSt3R position embedding {call.get('pos_embed')!r}")
    d = EncoderConfig()
    return EncoderConfig(
        patch_size=call.get("patch_size", d.patch_size),
        dim=call.get("embed_dim", d.dim),
        depth=call.get("depth", d.depth),
        num_heads=call.get("num_heads", d.num_heads),
        mlp_ratio=call.get("mlp_ratio", d.mlp_ratio),
    )


def decoder_config(call: Call, enc: EncoderConfig) -> DecoderConfig:
    _expect(call, "MUSt3R", "CausalMUSt3R")
    if call.get("feedback_type", "single_mlp") != "single_mlp":
        raise ConstructorError(f"unsupported MUSt3R feedback type {call.get('feedback_type')!r}")
    if call.get("memory_mode", "norm_y") not in ("norm_y", "kv", "raw"):
        raise ConstructorError(f"unsupported MUSt3R memory mode {call.get('memory_mode')!r}")
    if call.get("head", "Linear") != "Linear":
        raise ConstructorError(f"unsupported MUSt3R head {call.get('head')!r}")
    d = DecoderConfig()
    return DecoderConfig(
        enc_dim=enc.dim,
        dim=call.get("embed_dim", d.dim),
        depth=call.get("depth", d.depth),
        num_heads=call.get("num_heads", d.num_heads),
        mlp_ratio=call.get("mlp_ratio", d.mlp_ratio),
        patch_size=enc.patch_size,
    )


def dino_config(call: Call) -> DinoConfig:
    _expect(call, "DinoV2Encoder")
    name = call.get("dino_model", "facebook/dinov2-large", position=0)
    if name != "facebook/dinov2-large" and "hidden_size" not in call.kwargs:
        raise ConstructorError(f"unsupported DINOv2 model {name!r} (only facebook/dinov2-large)")
    d = DinoConfig()
    return DinoConfig(
        dim=call.get("hidden_size", d.dim),
        depth=call.get("num_hidden_layers", d.depth),
        num_heads=call.get("num_attention_heads", d.num_heads),
        output_stride=call.get("output_stride", d.output_stride),
    )


def panoptic_config(call: Call, concat_dim: int) -> PanopticConfig:
    _expect(call, "PanopticDecoder")
    if call.get("label_mode", "sigmoid") != "sigmoid":
        raise ConstructorError(f"unsupported label mode {call.get('label_mode')!r} (only 'sigmoid')")
    if call.get("num_feature_levels", 1) != 1 or call.get("two_stage", False):
        raise ConstructorError("only the single-level, one-stage mask transformer is supported")
    upscaler, mixer = call.get("upscaler", position=0), call.get("input_mixer")
    if not isinstance(upscaler, Call):
        raise ConstructorError("the panoptic decoder string names no upscaler")
    d = MaskTransformerConfig()
    hidden = call.get("hidden_dim", d.hidden_dim)
    mask_dim = call.get("mask_dim", 256)
    mt = MaskTransformerConfig(
        hidden_dim=hidden,
        ff_dim=call.get("ff_dim", d.ff_dim),
        num_queries=call.get("num_queries", d.num_queries),
        num_heads=call.get("num_heads", d.num_heads),
        depth=call.get("dec_layers", d.depth),
        mask_dim=mask_dim,
        lang_dim=call.get("lang_dim", d.lang_dim),
    )
    if upscaler.name == "PixelShuffleUpscaler" and mixer is None:
        dims = tuple(upscaler.get("fp_dim", (hidden, 512, 384, mask_dim)))
        if upscaler.get("input_dim", concat_dim, position=0) != concat_dim:
            raise ConstructorError(
                f"PixelShuffleUpscaler input_dim {upscaler.get('input_dim', position=0)} != {concat_dim}"
            )
        ps = PixelShuffleConfig(dims=dims, hidden_factor=upscaler.get("hidden_dim_factor", 4))
        return PanopticConfig("v1", ps, None, None, mt)
    if upscaler.name == "LoftUpUpscaler" and isinstance(mixer, Call) and mixer.name == "InputMixer":
        mx = InputMixerConfig(
            dim=mixer.get("hidden_dim", 768),
            depth=mixer.get("num_layers", 3),
            num_heads=mixer.get("num_heads", 12),
            mlp_ratio=mixer.get("ff_dim_mult", 4),
        )
        lu = LoftUpConfig(
            dim=upscaler.get("dim", 384),
            depth=upscaler.get("num_layers", 2),
            num_heads=upscaler.get("num_heads", 4),
            n_freqs=upscaler.get("n_freqs", 20),
        )
        return PanopticConfig("v2", None, mx, lu, mt)
    raise ConstructorError(
        f"unsupported panoptic decoder: upscaler {upscaler.name} with input mixer {getattr(mixer, 'name', None)}"
    )


def config_from_args(args: Any) -> ModelConfig:
    """Build our :class:`ModelConfig` from an official ``args`` namespace (or dict)."""
    get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
    missing = [k for k in ("must3r_encoder", "must3r_decoder", "dino_encoder", "panoptic_decoder") if not get(k)]
    if missing:
        raise ConstructorError(f"the checkpoint's args lack {', '.join(missing)}")
    enc = encoder_config(parse_call(get("must3r_encoder")))
    dec = decoder_config(parse_call(get("must3r_decoder")), enc)
    dino = dino_config(parse_call(get("dino_encoder")))
    panoptic = panoptic_config(parse_call(get("panoptic_decoder")), enc.dim + dec.dim + dino.dim)
    postprocess = get("postprocess_default", None) or "standard_v2"
    if postprocess not in ("standard_v1", "standard_v2", "qubo"):
        raise ConstructorError(f"unknown postprocess_default {postprocess!r}")
    cfg = ModelConfig(encoder=enc, decoder=dec, dino=dino, panoptic=panoptic, postprocess_default=postprocess)
    check_sizes(cfg)
    return cfg


MAX_SIZE = 16_384  # no width, head count or query count of a real model comes near this
MAX_DEPTH = 256


def check_sizes(config: Any, where: str = "model") -> None:
    """Refuse sizes no real model has before anything is built (``depth=10000000`` would hang for minutes)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_sizes(value, f"{where}.{f.name}")
        elif isinstance(value, int) and not isinstance(value, bool):
            limit = MAX_DEPTH if "depth" in f.name or "layers" in f.name else MAX_SIZE
            if not 0 <= value <= limit:
                raise ConstructorError(
                    f"the checkpoint's args give {where}.{f.name} = {value}, outside 0..{limit}; "
                    "it is not a PanSt3R checkpoint this engine can build"
                )


def args_from_config(cfg: ModelConfig) -> dict[str, Any]:
    """Constructor strings in the official spelling, with our size keywords where they differ."""
    full = ModelConfig()
    enc, dec, dino, pan = cfg.encoder, cfg.decoder, cfg.dino, cfg.panoptic
    enc_s = "Dust3rEncoder(img_size=[512, 512], patch_embed='PatchEmbedDust3R'"
    if enc != full.encoder:
        enc_s += f", embed_dim={enc.dim}, depth={enc.depth}, num_heads={enc.num_heads}"
    dec_s = "MUSt3R(img_size=[512, 512], feedback_type='single_mlp', memory_mode='norm_y'"
    if dec != full.decoder:
        dec_s += f", embed_dim={dec.dim}, depth={dec.depth}, num_heads={dec.num_heads}"
    dino_s = "DinoV2Encoder("
    if dino != full.dino:
        dino_s += f"hidden_size={dino.dim}, num_hidden_layers={dino.depth}, num_attention_heads={dino.num_heads}"
    mt = pan.mask_transformer
    sizes = (
        f", hidden_dim={mt.hidden_dim}, ff_dim={mt.ff_dim}, num_queries={mt.num_queries}, "
        f"num_heads={mt.num_heads}, dec_layers={mt.depth}"
        if mt.hidden_dim != 768 or mt.depth != 6
        else ""
    )
    if pan.version == "v1":
        ps = pan.pixel_shuffle
        up = f"PixelShuffleUpscaler(input_dim={cfg.concat_dim}" + (
            f", fp_dim={list(ps.dims)})" if ps.dims != (768, 512, 384, 256) else ")"
        )
        pan_s = (
            f"PanopticDecoder(input_mixer=None, upscaler={up}, mask_dim={mt.mask_dim}, label_mode='sigmoid', "
            f"text_encoder='siglip'{sizes})"
        )
    else:
        mx, lu = pan.input_mixer, pan.loftup
        mix = (
            f"InputMixer(img_size=[512, 512], patch_size=16, in_dim={cfg.concat_dim}, hidden_dim={mx.dim}, "
            f"num_heads={mx.num_heads}, num_layers={mx.depth}, ff_dim_mult={int(mx.mlp_ratio)})"
        )
        up = f"LoftUpUpscaler(input_dim={mx.dim}, dim={lu.dim}, output_stride=2, patch_size=16"
        up += ")" if (lu.depth, lu.num_heads) == (2, 4) else f", num_layers={lu.depth}, num_heads={lu.num_heads})"
        pan_s = (
            f"PanopticDecoder(input_mixer={mix}, upscaler={up}, mask_dim={mt.mask_dim}, label_mode='sigmoid', "
            f"text_encoder='siglip'{sizes})"
        )
    return {
        "must3r_encoder": enc_s + ")",
        "must3r_decoder": dec_s + ")",
        "dino_encoder": dino_s + ")",
        "panoptic_decoder": pan_s,
        "postprocess_default": cfg.postprocess_default,
        "qubo_enabled": True,
    }
