"""The weights registry: what can be downloaded, from where, under which licence, and where it lives in the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from panst3r_engine.config import ENV_BASE_URL, cache_root
from panst3r_engine.errors import PanSt3RError

DOWNLOAD_HINT = "python -m panst3r_engine weights download {id} --accept-license"


class WeightsError(PanSt3RError):
    """Weights that cannot be found, fetched or trusted, with one sentence saying what to do."""

    code = "weights"


class LicenseNotAccepted(WeightsError):
    """A download refused because its licence has not been accepted yet."""


@dataclass(frozen=True)
class Licence:
    id: str
    name: str
    summary: str
    url: str
    needs_acceptance: bool = True


@dataclass(frozen=True)
class FilePin:
    """Expected size and SHA-256 of one file of a folder entry; ``None`` where no published value is known."""

    size: int | None = None
    sha256: str | None = None


SIZE_MARGIN = 2  # without an exact size, a download may bring at most this many times the size hint


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable item: a single file, or (``files`` non-empty) a folder of files under ``url``.

    ``pins`` maps folder files to their expected size and SHA-256 (checked before the folder is used);
    ``companions`` names entries downloaded with this one (a retrieval head's codebook); ``hosts`` lists
    the hosts other than the URL's own that its server may redirect to
    (``.example.org`` admits every subdomain). ``size_limit`` bounds a download whose size is not published.
    """

    id: str
    filename: str
    url: str
    md5: str | None
    size_hint: int | None
    licence_id: str
    description: str
    files: tuple[str, ...] = field(default=())
    pins: tuple[tuple[str, FilePin], ...] = field(default=())
    hosts: tuple[str, ...] = field(default=())
    companions: tuple[str, ...] = field(default=())
    size_limit: int | None = None  # the most bytes a download may bring when no size is published

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    def pin(self, name: str) -> FilePin:
        return dict(self.pins).get(name, FilePin())

    def max_bytes(self, name: str | None = None) -> int | None:
        """The most bytes a download may bring: the pinned size of ``name``, else the hint with a margin."""
        size = self.pin(name).size if name else None
        if size is not None:
            return size
        return self.size_limit if self.size_hint is None else self.size_hint * SIZE_MARGIN


LICENCES = {
    lic.id: lic
    for lic in (
        Licence(
            "panst3r-noncommercial",
            "PanSt3R Non-Commercial License (NAVER LABS Europe)",
            "The PanSt3R checkpoints are published by NAVER LABS Europe under the PanSt3R Non-Commercial License: "
            "you may use them for non-commercial purposes only. They are not part of this MIT-licensed engine, "
            "which never bundles them; read the full terms before use.",
            "https://github.com/naver/panst3r (LICENSE)",
        ),
        Licence(
            "apache-2.0",
            "Apache License 2.0",
            "The SigLIP model google/siglip-base-patch16-224 is published by Google under the Apache License 2.0.",
            "https://www.apache.org/licenses/LICENSE-2.0",
            needs_acceptance=False,
        ),
        Licence(
            "must3r-noncommercial",
            "MUSt3R Non-Commercial License (NAVER LABS Europe)",
            "The MUSt3R retrieval weights and codebook are published by NAVER LABS Europe under the MUSt3R "
            "Non-Commercial License: you may use them for non-commercial purposes only. They are not part of this "
            "MIT-licensed engine, which never bundles them; read the full terms before use.",
            "https://github.com/naver/must3r (LICENSE)",
        ),
    )
}


_NAVER = "https://download.europe.naverlabs.com/ComputerVision/PanSt3R"
_MUST3R = "https://download.europe.naverlabs.com/ComputerVision/MUSt3R"  # MD5s: its checksums.txt


# A fixed revision, so that the pins below describe exactly the files served (``main`` may move).
_SIGLIP_REVISION = "7fd15f0689c79d79e38b1c2e2e2370a7bf2761ed"
_SIGLIP = f"https://huggingface.co/google/siglip-base-patch16-224/resolve/{_SIGLIP_REVISION}"

# Sources of the pins (looked up 2026-12-03):
# - model.safetensors SHA-256: the Hugging Face file page (Git LFS details) of the commit that last changed
#   it, https://huggingface.co/google/siglip-base-patch16-224/blob/refs%2Fpr%2F4/model.safetensors (5b1f0cc)
# - spiece.model SHA-256: https://huggingface.co/google/siglip-base-patch16-224/blob/314c6a48f0437e0c7111238d6bd95acd5ab11dec/spiece.model
# - config.json 432, special_tokens_map.json 409, tokenizer_config.json 711 bytes: the repository's file list,
#   https://huggingface.co/google/siglip-base-patch16-224/tree/d9049814fd748f55717e7f6e8e330574f955bd0a
# - exact sizes of model.safetensors and spiece.model, and the SHA-256 of the three JSON files: two
#   independent public projects that pin this repository at the revision above (their manifests agree
#   with each other and with the sizes and LFS hashes above); not read from Hugging Face itself.
_SIGLIP_PINS = (
    ("config.json", FilePin(432, "cd85b3d28829722820bcb89a2cfbb4160e55fd359249a3044da724166a8d9688")),
    ("model.safetensors", FilePin(812_672_320, "2c63cb7d1f2e95ba501893cbb8faeb4ea9a3af295498d35097126228659c2af8")),
    ("spiece.model", FilePin(798_330, "1e5036bed065526c3c212dfbe288752391797c4bb1a284aa18c9a0b23fcaf8ec")),
    ("tokenizer_config.json", FilePin(711, "d6423dae508cc3a129d22ea443841c111832a1a73125b8f25ea8736951698bcb")),
    ("special_tokens_map.json", FilePin(409, "2b6a1ff67a27e0df9ac0c7d93250fc0d87431c7b366b3d5669217104f9088a26")),
)

# Where huggingface.co sends file downloads: its hub, LFS, Xet and CDN domains are all huggingface.co or
# hf.co subdomains (https://huggingface.co/.well-known/meta.json: hubDomains, lfsDomains, cdnDomains).
_HF_HOSTS = ("huggingface.co", ".huggingface.co", "hf.co", ".hf.co")


# size hints: fp32 parameter counts of the published architectures (ViT-L, DINOv2-L), not published sizes.
REGISTRY = {
    e.id: e
    for e in (
        WeightsEntry(
            "panst3r-v1-512",
            "panst3r_v1_512_5ds.pth",
            f"{_NAVER}/panst3r_v1_512_5ds.pth",
            "901ac0e17153f9b15decaa796511b1be",
            3_500_000_000,
            "panst3r-noncommercial",
            "PanSt3R v1 (PixelShuffle upscaler), 512 px, 5 training datasets",
        ),
        WeightsEntry(
            "panst3r-v2-512",
            "panst3r_v2_512_5ds.pth",
            f"{_NAVER}/panst3r_v2_512_5ds.pth",
            "6a7a47a2ea635de05af45ded8dcabd57",
            3_200_000_000,
            "panst3r-noncommercial",
            "PanSt3R v2 (LoftUp upscaler), 512 px, 5 training datasets",
        ),
        WeightsEntry(
            "siglip-text",
            "siglip-base-patch16-224",
            _SIGLIP,
            None,
            813_000_000,
            "apache-2.0",
            "SigLIP base text tower for class embeddings (Hugging Face google/siglip-base-patch16-224)",
            files=(
                "config.json",
                "model.safetensors",
                "spiece.model",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ),
            pins=_SIGLIP_PINS,
            hosts=_HF_HOSTS,
        ),
        # Keyframes by retrieval (MUSt3R's 512 encoder, which PanSt3R's checkpoints carry). The head is about
        # 8.4 MB (a third-party README); the codebook's size is not published, so it is bounded by the reader.
        WeightsEntry(
            "must3r-retrieval-512",
            "MUSt3R_512_retrieval_trainingfree.pth",
            f"{_MUST3R}/MUSt3R_512_retrieval_trainingfree.pth",
            "f7c133906bcfd4fe6ee157a9ffa85a23",
            8_400_000,
            "must3r-noncommercial",
            "MUSt3R retrieval head (512 encoder) for choosing keyframes; fetches its codebook too",
            companions=("must3r-retrieval-512-codebook",),
        ),
        WeightsEntry(
            "must3r-retrieval-512-codebook",
            "MUSt3R_512_retrieval_codebook.pkl",
            f"{_MUST3R}/MUSt3R_512_retrieval_codebook.pkl",
            "1125d80b9de940de2655d19b3ff78bb5",
            None,
            "must3r-noncommercial",
            "ASMK codebook of the MUSt3R retrieval head (512); read without unrestricted unpickling",
            size_limit=2 << 30,  # what model/codebook.py's reader accepts (MAX_CODEBOOK_BYTES)
        ),
    )
}


ALIASES = {"v1": "panst3r-v1-512", "v2": "panst3r-v2-512", "siglip": "siglip-text", "retrieval": "must3r-retrieval-512"}
RETRIEVAL_ID = "must3r-retrieval-512"


_SUPERSEDED_MD5 = {"c3836c108f1bf441fe53776e825cd1ac": "the first PanSt3R v1 release, replaced on 2025-11-26"}


class WeightsRow(NamedTuple):
    id: str
    file: str
    present: bool
    size: int | None
    path: Path


def weights_dir() -> Path:
    return cache_root() / "weights"


def get_entry(spec: str | WeightsEntry) -> WeightsEntry:
    """A registry entry from an id or alias; entries pass through so tests and mirrors can use their own."""
    if isinstance(spec, WeightsEntry):
        return spec
    entry = REGISTRY.get(ALIASES.get(spec, spec))
    if entry is None:
        raise WeightsError(f"unknown weights id '{spec}'; known ids: {', '.join([*REGISTRY, *ALIASES])}")
    return entry


def licence_of(entry: WeightsEntry) -> Licence:
    return LICENCES.get(entry.licence_id) or Licence(
        entry.licence_id, entry.licence_id, f"These weights are under the licence '{entry.licence_id}'.", ""
    )


def weights_path(spec: str | WeightsEntry) -> Path:
    """Where the file (or folder) of ``spec`` is, or will be after a download."""
    return weights_dir() / get_entry(spec).filename


def is_present(spec: str | WeightsEntry) -> bool:
    """The file is there; for a folder entry, every one of its files (an incomplete folder counts as absent)."""
    entry, path = get_entry(spec), weights_path(spec)
    return not missing_files(entry) if entry.is_folder else path.is_file()


def missing_files(spec: str | WeightsEntry) -> list[str]:
    """The files of a folder entry that are not (or only as empty files) in its cache folder."""
    entry, path = get_entry(spec), weights_path(spec)
    return [f for f in entry.files if not (path / f).is_file() or (path / f).stat().st_size == 0]


def source_url(entry: WeightsEntry, name: str | None = None, base_url: str | None = None) -> str:
    """URL of the file (``name`` inside a folder entry); a base URL mirrors the ``weights/`` folder layout."""
    base = base_url or os.environ.get(ENV_BASE_URL)
    if entry.is_folder:
        folder = f"{base.rstrip('/')}/{entry.filename}" if base else entry.url.rstrip("/")
        return f"{folder}/{name or ''}"
    return f"{base.rstrip('/')}/{entry.filename}" if base else entry.url


def _place_by_hand(entry: WeightsEntry) -> str:
    """Which file to download from which URL, and where to put it."""
    path = weights_path(entry)
    if entry.is_folder:
        missing = missing_files(entry)
        if path.is_dir() and missing:
            return (
                f"the folder {path} is incomplete: download {', '.join(missing)} from {source_url(entry, '')} into it"
            )
        return f"download {', '.join(entry.files)} from {source_url(entry, '')} into the folder {path}"
    return f"download {entry.filename} from {source_url(entry)} and place it at {path}"


def manual_instructions(entry: WeightsEntry) -> str:
    """How to get the weights: by hand, or with the download command."""
    return f"{_place_by_hand(entry)}, or run `{DOWNLOAD_HINT.format(id=entry.id)}`"


def resolve_weights(spec: str | os.PathLike) -> Path:
    """A usable weights path from a registry id, an alias ('v1', 'v2') or a file path; never downloads."""
    if isinstance(spec, str) and ALIASES.get(spec, spec) in REGISTRY:
        entry = get_entry(spec)
        if is_present(entry):
            return weights_path(entry)
        raise WeightsError(f"weights '{entry.id}' are not in the cache: {manual_instructions(entry)}")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    raise WeightsError(f"'{spec}' is neither an existing file nor a weights id ({', '.join([*REGISTRY, *ALIASES])})")


def list_weights(entries: list[WeightsEntry] | None = None) -> list[WeightsRow]:
    """One row per registry entry: whether it is cached, its size on disk, and its path."""
    rows = []
    for entry in entries or list(REGISTRY.values()):
        path, present = weights_path(entry), is_present(entry)
        files = [path / f for f in entry.files] if entry.is_folder else [path]
        size = sum(f.stat().st_size for f in files if f.is_file()) if present else None
        rows.append(WeightsRow(entry.id, entry.filename + ("/" if entry.is_folder else ""), present, size, path))
    return rows
