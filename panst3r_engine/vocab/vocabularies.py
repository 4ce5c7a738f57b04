"""Class vocabularies: the three presets of the official demo in the official order (``vocab/data/*.json``,
provenance in ``vocab/data/README.md``), or a user's list.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from panst3r_engine.errors import PanSt3RError

PRESETS = ("scannetpp", "coco", "ade20k")
CHECKPOINT_VOCAB = "checkpoint"  # the classes a checkpoint written by train stores (vocab.checkpoint)


PRESET_ALIASES = {"scannet": "scannetpp", "scannet++": "scannetpp", "ade": "ade20k", "ade20k-150": "ade20k"}


MAX_CLASSES = 4096


_STUFF_SUFFIX, _THING_SUFFIX = ";stuff", ";thing"


class VocabularyError(PanSt3RError):
    """A vocabulary or embedding file that cannot be used, with the reason."""

    code = "bad_vocab"


@dataclass(frozen=True)
class Vocabulary:
    """Ordered class names (the column order of the class logits) and their thing/stuff flags."""

    names: tuple[str, ...]
    isthing: tuple[bool, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)


def validate_names(names: list[str], where: str) -> None:
    """Reject what would make columns ambiguous or prompts malformed: empty, duplicate, multi-line names."""
    if not names:
        raise VocabularyError(f"{where}: the vocabulary is empty")
    if len(names) > MAX_CLASSES:
        raise VocabularyError(f"{where}: {len(names)} classes, more than the supported {MAX_CLASSES}")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise VocabularyError(f"{where}: class {i} has an empty name")
        if "\n" in name or "\r" in name:
            raise VocabularyError(f"{where}: class {i} ({name!r}) contains a line break")
        if name in seen:
            raise VocabularyError(f"{where}: duplicate class name {name!r} (class {i})")
        seen.add(name)


def _make(names: list[str], isthing: list[bool], source: str) -> Vocabulary:
    validate_names(names, source)
    return Vocabulary(tuple(names), tuple(bool(t) for t in isthing), source)


def _entries_from_json(data: object, where: str) -> tuple[list[str], list[bool]]:
    """A JSON list of names, or of ``{"name", "isthing"}`` objects (isthing defaults to True)."""
    if not isinstance(data, list):
        raise VocabularyError(f"{where}: expected a JSON list of class names or {{'name', 'isthing'}} objects")
    names, things = [], []
    for i, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
            things.append(bool(item.get("isthing", True)))
        elif isinstance(item, str):
            names.append(item)
            things.append(True)
        else:
            raise VocabularyError(f"{where}: entry {i} is neither a name nor an object with a 'name' string")
    return names, things


def _entries_from_text(text: str) -> tuple[list[str], list[bool]]:
    """One class per line; '#' starts a comment; a ';stuff' (or ';thing') suffix sets the flag."""
    names, things = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        thing = True
        for suffix, flag in ((_STUFF_SUFFIX, False), (_THING_SUFFIX, True)):
            if line.lower().endswith(suffix):
                line, thing = line[: -len(suffix)].strip(), flag
        names.append(line)
        things.append(thing)
    return names, things


@cache
def _preset_entries(preset: str) -> tuple[dict, ...]:
    """The packaged JSON entries of a preset (name, isthing, optional official colour)."""
    text = (resources.files("panst3r_engine.vocab") / "data" / f"{preset}.json").read_text("utf-8")
    return tuple(json.loads(text))


def preset_name(spec: str) -> str | None:
    """The canonical preset for a spec ('scannet' -> 'scannetpp'), or None if it is not a preset."""
    key = spec.strip().lower()
    key = PRESET_ALIASES.get(key, key)
    return key if key in PRESETS else None


def load_vocabulary(spec: str | os.PathLike) -> Vocabulary:
    """A preset name (``scannetpp``/``scannet``, ``coco``, ``ade20k``) or a ``.txt``/``.json`` class file."""
    preset = preset_name(str(spec)) if isinstance(spec, str) else None
    if preset is not None:
        names, things = _entries_from_json(list(_preset_entries(preset)), preset)
        return _make(names, things, preset)
    path = Path(spec)
    if not path.is_file():
        raise VocabularyError(
            f"vocabulary {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
        )
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read vocabulary file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"{path} is not valid JSON: {exc}") from exc
        names, things = _entries_from_json(data, str(path))
    else:
        names, things = _entries_from_text(text)
    return _make(names, things, str(path))


def merge_vocabularies(vocabularies: list[Vocabulary]) -> Vocabulary:
    """Union keeping first occurrences in order (the demo uses ``list(set(...))``, whose order is random)."""
    seen: dict[str, bool] = {}
    for vocab in vocabularies:
        for name, thing in zip(vocab.names, vocab.isthing):
            seen.setdefault(name, thing)
    return _make(list(seen), list(seen.values()), "+".join(v.source for v in vocabularies))
