"""The SigLIP text tower path: parity with the official embeddings, tokenizer call, loading, cache.

Needs the optional ``text`` extra (transformers, sentencepiece, protobuf); skipped without it.
The real SigLIP vocabulary cannot be fetched in tests, so the tokenizer tests use a tiny
sentencepiece model trained on the fly. The parity test starts from the fixture's token ids.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="optional 'text' extra (transformers) not installed")
spm = pytest.importorskip("sentencepiece", reason="optional 'text' extra (sentencepiece) not installed")
pytest.importorskip("google.protobuf", reason="optional 'text' extra (protobuf, for SiglipTokenizer) not installed")

from panst3r_engine.vocab import text_encoder  # noqa: E402
from panst3r_engine.vocab.embeddings import embeddings_for  # noqa: E402
from panst3r_engine.vocab.text_encoder import MAX_LENGTH, embed_tokens, prompts, tokenize  # noqa: E402
from panst3r_engine.vocab.vocabularies import Vocabulary, VocabularyError, load_vocabulary  # noqa: E402
from tests.parity_utils import fill_tensor, load_case  # noqa: E402

EOS = 1  # SigLIP: pad = eos = 1


# ---------------------------------------------------------------- parity (official fixtures)


def _filled_text_model(parity_dir) -> torch.nn.Module:
    """SiglipTextModel with the manifest's config, filled by the parity rule under the manifest's key names.

    The manifest uses transformers 4.57 keys (``text_model.`` prefix); newer versions drop the prefix.
    """
    manifest = json.loads((parity_dir / "manifests" / "siglip_text_state_dict.json").read_text())
    config = transformers.SiglipTextConfig(**manifest["siglip_text_config"])
    model = transformers.SiglipTextModel(config).eval()
    own = model.state_dict()
    filled = {}
    for key, shape, _ in manifest["tensors"]:
        name = key if key in own else key.removeprefix("text_model.")
        assert name in own and list(own[name].shape) == shape, key
        filled[name] = fill_tensor(key, shape)
    assert set(filled) == set(own), "manifest and installed SiglipTextModel disagree on keys"
    model.load_state_dict(filled)
    return model


@pytest.fixture(scope="module")
def parity_text_model(parity_dir):
    return _filled_text_model(parity_dir)


@pytest.mark.parametrize("case", ["all_kf_v1", "partial_kf_v1"])
def test_class_embeddings_match_official(parity_dir, parity_text_model, case):
    arrays, meta = load_case(parity_dir, case)
    ids = torch.from_numpy(arrays["class_token_ids"])
    mask = torch.from_numpy(arrays["class_attention_mask"])
    got = embed_tokens(parity_text_model, ids, mask).numpy()
    want = arrays["class_embeddings"]
    assert got.shape == want.shape == (len(meta["classes"]), 768)
    assert np.abs(got - want).max() <= 1e-5
    assert meta["prompts"] == prompts(meta["classes"])


def test_attention_mask_matters(parity_dir, parity_text_model):
    """Without the mask the padded keys are attended to and the embedding moves (~0.13 per the notes)."""
    arrays, _ = load_case(parity_dir, "all_kf_v1")
    ids = torch.from_numpy(arrays["class_token_ids"])
    unmasked = embed_tokens(parity_text_model, ids, torch.ones_like(ids)).numpy()
    assert np.abs(unmasked - arrays["class_embeddings"]).max() > 1e-2


# ---------------------------------------------------------------- tokenizer call (tiny sentencepiece model)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A SiglipTokenizer over a sentencepiece model trained here (ids: pad 0, eos 1, unk 2, like SigLIP's)."""
    sentences = [
        "this is a photo of chair",
        "this is a photo of table",
        "basket handbasket window wall floor",
        "toilet can commode pot stool throne",
        "a photo of a dog and a cat on the sofa",
    ] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "spiece.model"
    path.write_bytes(buf.getvalue())
    return transformers.SiglipTokenizer(vocab_file=str(path))


def test_tokenize_pads_to_64_with_mask_on_words_and_eos(tiny_tokenizer):
    ids, mask = tokenize(tiny_tokenizer, ["chair", "basket, handbasket"])
    assert ids.shape == mask.shape == (2, MAX_LENGTH) and ids.dtype == torch.int64
    for row_ids, row_mask in zip(ids, mask):
        n = int(row_mask.sum())
        assert row_mask[:n].all() and not row_mask[n:].any()  # ones on the words + eos, then zeros
        assert row_ids[n - 1] == EOS and (row_ids[n:] == EOS).all()  # eos, then pad = eos
        assert (row_ids[: n - 1] != EOS).all()


def test_canonicalisation_drops_punctuation_case_and_spaces(tiny_tokenizer):
    ids, mask = tokenize(tiny_tokenizer, ["window ", "window", "Basket, Handbasket", "basket handbasket"])
    assert torch.equal(ids[0], ids[1]) and torch.equal(mask[0], mask[1])
    assert torch.equal(ids[2], ids[3]) and torch.equal(mask[2], mask[3])


def test_too_long_class_name_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(VocabularyError, match="too long"):
        tokenize(tiny_tokenizer, ["chair", "x y z " * 40])


# ---------------------------------------------------------------- a saved model folder, end to end


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A full (text + vision) SigLIP checkpoint folder, as the hub lays it out, with tiny dimensions."""
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(
            vocab_size=tiny_tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MAX_LENGTH,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
    )
    model = transformers.SiglipModel(config).eval()
    folder = tmp_path_factory.mktemp("siglip-tiny")
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder, model


def test_compute_embeddings_from_saved_folder(tiny_model_dir, tiny_tokenizer):
    folder, full = tiny_model_dir
    names = ["chair", "window ", "basket, handbasket"]
    got = text_encoder.compute_embeddings(names, folder, batch_size=2)
    batch = tiny_tokenizer(prompts(names), padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        pooled = full.get_text_features(**batch)
    pooled = getattr(pooled, "pooler_output", pooled)  # tensor (4.x) or model output (5.x)
    want = pooled / pooled.norm(dim=-1, keepdim=True)
    assert got.shape == (3, 32)
    assert torch.allclose(got, want, atol=1e-6)


def test_embeddings_for_caches_real_model_output(tiny_model_dir, tmp_path, monkeypatch):
    folder, _ = tiny_model_dir
    vocabulary = load_vocabulary("ade20k")
    first = embeddings_for(vocabulary, folder, cache_dir=tmp_path)

    def no_compute(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(text_encoder, "compute_embeddings", no_compute)
    again = embeddings_for(vocabulary, folder, cache_dir=tmp_path)
    offline = embeddings_for(vocabulary, None, cache_dir=tmp_path)
    assert torch.equal(first.vectors, again.vectors) and torch.equal(first.vectors, offline.vectors)
    assert first.isthing == list(vocabulary.isthing) and len(first) == 150
    with pytest.raises(VocabularyError, match="siglip-text"):
        embeddings_for(Vocabulary(("never cached",), (True,)), None, cache_dir=tmp_path)
