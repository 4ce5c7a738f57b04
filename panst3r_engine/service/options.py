"""Job options a client may send, checked once at submission.

Clients choose only what changes a result (keyframes, video sampling,
post-processing, vocabulary, thresholds, splats); the weights and the device belong to the
engine. Nothing a client sends is ever used as a path: a vocabulary is a preset
name or a list of class names that the job writes into its own folder. Which
options a client may send, their types and ranges come from the field metadata
of :class:`JobOptions` (``client``), so the service and the command line refuse
the same values with the same sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from panst3r_engine.errors import OptionsError
from panst3r_engine.pipeline.options import JobOptions, check_value, option_fields
from panst3r_engine.service.errors import ApiError
from panst3r_engine.vocab.vocabularies import CHECKPOINT_VOCAB, PRESETS, VocabularyError, preset_name, validate_names

CHOICES = (*PRESETS, CHECKPOINT_VOCAB)  # the names a client may send as its vocabulary

# the two options whose client form differs from the engine's (a list of names; only 'random', never a path)
_OWN_FORM: dict[str, tuple[tuple[type, ...], str]] = {
    "vocab": ((str, list), f"a preset name ({', '.join(CHOICES)}) or a list of class names"),
    "vocab_embeddings": ((str,), "'random' (for tests and smoke runs)"),
}
# the options a client may send, in declaration order: JobOptions fields marked ``client`` in their metadata
FIELDS: tuple[str, ...] = tuple(name for name, f in option_fields().items() if f.metadata["client"])


@dataclass(frozen=True)
class ClientOptions:
    """The validated options of one job; ``vocab_names`` is set when the client sent its own classes."""

    values: dict
    vocab_names: tuple[str, ...] | None = None
    splats: bool = False
    splat_steps: int | None = None

    def job_options(self, base: JobOptions, vocab_file: str | None = None) -> JobOptions:
        """The pipeline options: the engine's ``base`` (weights, device) with the client's choices."""
        fields = {k: v for k, v in self.values.items() if k not in ("splats", "splat_steps", "vocab")}
        if "vocab" in self.values and self.vocab_names is None:
            fields["vocab"] = _choice(self.values["vocab"])
        if vocab_file is not None:
            fields["vocab"] = vocab_file
        for name in ("conf_threshold", "video_fps"):  # JSON may spell a float as an integer
            if name in fields:
                fields[name] = float(fields[name])
        if self.splats:
            fields["splats"] = True
            if self.splat_steps is not None:
                fields["splat_steps"] = int(self.splat_steps)
        return replace(base, **fields).validate()


MAX_OPTIONS_CHARS = 1 << 20  # a vocabulary of 4096 long class names fits
MAX_INT_DIGITS = 40  # longer than any 128-bit number: only a hostile request sends more


def _bounded_int(digits: str) -> int:
    """JSON integers, refused before conversion when longer than any option could be."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("integer too long")
    return int(digits)


def parse_options(text: str | None) -> ClientOptions:
    """Parse the ``options`` form field (a JSON object, or absent); raises :class:`ApiError` (400)."""
    if text is None or not text.strip():
        return ClientOptions({})
    if len(text) > MAX_OPTIONS_CHARS:
        raise _bad(f"the 'options' field is {len(text)} characters long; at most {MAX_OPTIONS_CHARS} are accepted")
    try:
        values = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise _bad(f"the 'options' field is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    except (RecursionError, ValueError):  # nested thousands deep, or an integer of thousands of digits
        raise _bad("the 'options' field is nested too deeply or holds a number too long to be an option") from None
    if not isinstance(values, dict):
        raise _bad("the 'options' field must be a JSON object such as {\"keyframes\": 10}")
    for key, value in values.items():
        _check_type(key, value)
    values = {k: v for k, v in values.items() if v is not None}  # null: the default
    _check_ranges(values)
    names = _vocab_names(values.get("vocab"))
    options = ClientOptions(values, names, bool(values.get("splats", False)), values.get("splat_steps"))
    try:
        options.job_options(JobOptions())
    except OptionsError as exc:
        raise _bad(exc.message) from exc
    return options


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_options", message)


def _check_type(key: str, value: object) -> None:
    """Known key; a value of the JSON type (and, for the engine's fields, the range) its metadata gives."""
    if key not in FIELDS:
        raise _bad(f"unknown option {key!r}; known options are {', '.join(FIELDS)}")
    if value is None:
        return
    if key in _OWN_FORM:
        types, expected = _OWN_FORM[key]
        if not isinstance(value, types):
            raise _bad(f"option {key!r} must be {expected}, got {json.dumps(value)[:60]}")
        return
    try:
        check_value(key, value)
    except OptionsError as exc:
        raise _bad(exc.message) from exc


def _check_ranges(values: dict) -> None:
    """What the per-field metadata cannot say: no embeddings path, and steps only with splats."""
    if values.get("vocab_embeddings", "random") != "random":
        raise _bad("option 'vocab_embeddings' accepts only 'random'; leave it out to use the class text embeddings")
    if "splat_steps" in values and not values.get("splats"):
        raise _bad("option 'splat_steps' needs \"splats\": true")


def _vocab_names(vocab: object) -> tuple[str, ...] | None:
    """None for a preset (checked here), the names for a client's own list."""
    if vocab is None:
        return None
    if isinstance(vocab, str):
        if _choice(vocab) is None:
            raise _bad(
                f"vocabulary {vocab!r} is not a preset ({', '.join(CHOICES)}); "
                "send your own classes as a list of names instead"
            )
        return None
    for i, name in enumerate(vocab):
        if not isinstance(name, str):
            raise _bad(f"vocabulary entry {i} must be a class name string, got {json.dumps(name)[:60]}")
        if "#" in name:
            raise _bad(f"vocabulary entry {i} ({name!r}) contains '#'; remove it from the class name")
    names = [name.strip() for name in vocab]
    try:
        validate_names(names, "the vocabulary")
    except VocabularyError as exc:
        raise _bad(str(exc)) from exc
    return tuple(names)


def _choice(vocab: str) -> str | None:
    """The canonical preset, or 'checkpoint' (the engine's checkpoint's own classes), or None."""
    return CHECKPOINT_VOCAB if vocab.strip().lower() == CHECKPOINT_VOCAB else preset_name(vocab)


def vocab_file_text(names: tuple[str, ...]) -> str:
    """A class file for :func:`panst3r_engine.vocab.load_vocabulary`: one name per line."""
    return "".join(f"{name}\n" for name in names)
