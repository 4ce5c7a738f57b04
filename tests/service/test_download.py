"""Bundle zips are streamed in chunks and unpack to exactly the bundle's files."""

from __future__ import annotations

import io
import os
import zipfile

from panst3r_engine.service.download import CHUNK, zip_stream


def test_zip_stream_round_trips_a_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "panoptic").mkdir(parents=True)
    files = {
        "manifest.json": b'{"format_version": 1}',
        "points.npz": os.urandom(3 * CHUNK + 123),
        "panoptic/a.png": b"\x89PNG fake",
        "splats.ply": b"ply\n" * 1000,
    }
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    chunks = list(zip_stream(bundle))
    assert len(chunks) > 3 and all(chunks)  # streamed, not built whole
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(files)
    for name, data in files.items():
        assert archive.read(name) == data
    assert archive.getinfo("points.npz").compress_type == zipfile.ZIP_STORED
    assert archive.getinfo("splats.ply").compress_type == zipfile.ZIP_DEFLATED


def test_empty_folder_gives_an_empty_zip(tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zip_stream(tmp_path))))
    assert archive.namelist() == []
