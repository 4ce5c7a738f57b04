"""The MUSt3R retrieval pair in the registry: official names, URLs and MD5s, and one download that brings both."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from panst3r_engine import weights as w
from panst3r_engine.config import ENV_BASE_URL, ENV_HOME, ENV_OFFLINE
from panst3r_engine.model.retrieval import codebook_path
from tests.weights.test_weights import FakeServer

HEAD, BOOK = b"head bytes " * 100, b"codebook bytes " * 100


def test_registry_pins_the_published_files():
    head, book = w.REGISTRY["must3r-retrieval-512"], w.REGISTRY["must3r-retrieval-512-codebook"]
    base = "https://download.europe.naverlabs.com/ComputerVision/MUSt3R/"
    assert (head.url, head.md5) == (base + "MUSt3R_512_retrieval_trainingfree.pth", "f7c133906bcfd4fe6ee157a9ffa85a23")
    assert (book.url, book.md5) == (base + "MUSt3R_512_retrieval_codebook.pkl", "1125d80b9de940de2655d19b3ff78bb5")
    assert head.companions == (book.id,) and w.ALIASES["retrieval"] == head.id
    assert head.licence_id == book.licence_id == "must3r-noncommercial"
    # The codebook lands where the head looks for it.
    assert codebook_path(w.weights_path(head.id)) == w.weights_path(book.id)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    for name in (ENV_OFFLINE, ENV_BASE_URL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "home"))
    for entry_id, body in (("must3r-retrieval-512", HEAD), ("must3r-retrieval-512-codebook", BOOK)):
        entry = w.REGISTRY[entry_id]
        monkeypatch.setitem(w.REGISTRY, entry_id, replace(entry, md5=hashlib.md5(body).hexdigest()))
    server = FakeServer({"/MUSt3R_512_retrieval_trainingfree.pth": HEAD, "/MUSt3R_512_retrieval_codebook.pkl": BOOK})
    yield server
    server.stop()


def test_downloading_the_head_brings_its_codebook(mirror):
    with pytest.raises(w.LicenseNotAccepted):
        w.download("retrieval", base_url=mirror.url)
    path = w.download("retrieval", accept_license=True, base_url=mirror.url)
    assert path.read_bytes() == HEAD and codebook_path(path).read_bytes() == BOOK
    assert w.verify("must3r-retrieval-512")[0] and w.verify("must3r-retrieval-512-codebook")[0]
    codebook_path(path).unlink()  # a lost codebook comes back with the head's download
    w.download("retrieval", base_url=mirror.url)
    assert codebook_path(path).read_bytes() == BOOK
