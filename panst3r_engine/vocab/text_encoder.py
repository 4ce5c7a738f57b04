"""Class-name embeddings from the SigLIP text tower (the official PanSt3R recipe).

The released PanSt3R models compare their queries with
``normalise(SiglipTextModel(**tokenizer(prompts)).pooler_output)``, where the prompts are
``"This is a photo of {name}."``, tokenized with ``padding='max_length'`` (64 tokens). The
attention mask is passed to the model: without it, the embeddings move by about 0.13.
The text tower is google/siglip-base-patch16-224. It is not part of the PanSt3R checkpoint.

``transformers`` (with ``sentencepiece`` and ``protobuf`` for the tokenizer) is optional: it is
imported only when a text model is loaded, so the engine imports without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from panst3r_engine.vocab.vocabularies import VocabularyError

DEFAULT_TEXT_MODEL = "google/siglip-base-patch16-224"
PROMPT_TEMPLATE = "This is a photo of {}."
MAX_LENGTH = 64  # SigLIP text positions; the official tokenizer call pads to this length
BATCH_SIZE = 32  # the official encoder's batch size
INSTALL_HINT = "pip install 'panst3r-engine[text]' (transformers, sentencepiece, protobuf)"


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (the official text encoder's output convention)."""
    return vectors / vectors.norm(dim=-1, keepdim=True)


def prompts(names: list[str]) -> list[str]:
    """The official prompt of each class name, the raw name included (spaces, commas)."""
    return [PROMPT_TEMPLATE.format(name) for name in names]


def _transformers() -> Any:
    """Import transformers lazily, with an install hint when it is missing."""
    try:
        import transformers
    except ImportError as exc:
        raise VocabularyError(f"computing class embeddings needs transformers: {INSTALL_HINT} ({exc})") from exc
    return transformers


def load_text_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(SiglipTextModel, tokenizer) from a local folder (config, weights, spiece.model), eval mode, float32."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise VocabularyError(f"text model folder {model_dir} does not exist")
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = transformers.SiglipTextModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        raise VocabularyError(f"cannot load the SigLIP text tower from {model_dir}: {exc}") from exc
    model.float().eval().requires_grad_(False)  # float32 whatever the version's default dtype
    return model.to(device), tokenizer


def tokenize(tokenizer: Any, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` [C, 64] exactly as the official call makes them.

    The official call does not truncate, so a prompt longer than 64 tokens would make the text
    tower fail. We raise a clear error instead, naming the offending classes.
    """
    texts = prompts(names)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    too_long = [name for name, n in zip(names, lengths) if n > MAX_LENGTH]
    if too_long:
        raise VocabularyError(
            f"class names too long for the SigLIP text tower (> {MAX_LENGTH} tokens with the prompt): {too_long[:5]}"
        )
    batch = tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def embed_tokens(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """Unit-norm ``pooler_output`` [C, D] (float32, CPU) of tokenized prompts, in batches.

    pooler_output = head(final-LN state at the last position). The official code normalises it
    without an epsilon.
    """
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        out = model(input_ids=ids, attention_mask=mask)
        chunks.append(out.pooler_output.float().cpu())
    return normalise(torch.cat(chunks))


def compute_embeddings(
    names: list[str], model_dir: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """[C, D] unit-norm text embeddings of ``names`` (in order) with the SigLIP text tower in ``model_dir``."""
    if not names:
        raise VocabularyError("the vocabulary is empty: give at least one class")
    model, tokenizer = load_text_model(model_dir, device)
    input_ids, attention_mask = tokenize(tokenizer, list(names))
    return embed_tokens(model, input_ids, attention_mask, batch_size)
