"""Hostile result bundles for both readers' tests: links out of the bundle, bombs, deep JSON, bad headers."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from panst3r_engine.bundle.spec import PLY_REQUIRED
from panst3r_engine.bundle.write import write_bundle
from tests.bundle_utils import make_bundle_inputs

STEM = "IMG_0001"  # the first image of tests/bundle_utils.py, 32 x 24
LINKED = ["manifest.json", "points.npz", f"panoptic/{STEM}.png", f"images/{STEM}.jpg", "panoptic", "images"]


def fresh_bundle(tmp_path: Path) -> Path:
    """The synthetic bundle of tests/bundle_utils.py, written by the engine, with a splats.ply of 2 Gaussians."""
    bundle = write_bundle(tmp_path / "bundle", *make_bundle_inputs())
    (bundle / "splats.ply").write_bytes(splats_ply(b"2", 2))
    return bundle


def link_out(bundle: Path, relative: str) -> Path:
    """Move a bundle file (or folder) outside the bundle and leave a symbolic link to it in its place."""
    outside = bundle.parent / ("outside_" + relative.replace("/", "_"))
    shutil.move(bundle / relative, outside)
    os.symlink(outside, bundle / relative)
    return outside


def splats_ply(count: bytes, present: int) -> bytes:
    """A binary PLY declaring ``count`` vertices and holding ``present`` (float32 required properties only)."""
    props = b"".join(b"property float %s\n" % name.encode() for name in PLY_REQUIRED)
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex " + count + b"\n" + props + b"end_header\n"
    return header + np.ones((present, len(PLY_REQUIRED)), "<f4").tobytes()


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A version 1.0 .npy header (magic included) declaring ``shape``; no data follows."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_points(bundle: Path, members: dict[str, bytes], compress: bool = False) -> None:
    """Replace points.npz by an archive of raw .npy members, keeping the real arrays not given."""
    with np.load(bundle / "points.npz") as npz:
        real = {name: npz[name] for name in npz.files}
    with zipfile.ZipFile(bundle / "points.npz", "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, arr in real.items():
            if name not in members:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr)
                zf.writestr(name + ".npy", buf.getvalue())
        for name, data in members.items():
            zf.writestr(name + ".npy", data)


def write_bomb(bundle: Path, inflated: int) -> None:
    """points.npz whose 'xyz' is a consistent .npy of ``inflated`` bytes of zeros, deflated to about 1/1000."""
    n = inflated // 12
    head = npy_header((n, 3))
    with np.load(bundle / "points.npz") as npz:
        real = {name: npz[name] for name in npz.files if name != "xyz"}
    with zipfile.ZipFile(bundle / "points.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("xyz.npy", "w", force_zip64=True) as member:
            member.write(head)
            zeros = bytes(1 << 20)
            for _ in range(n * 12 >> 20):
                member.write(zeros)
            member.write(bytes(n * 12 % (1 << 20)))
        for name, arr in real.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            zf.writestr(name + ".npy", buf.getvalue())


def edit_manifest(bundle: Path, edit) -> None:
    """Apply ``edit(manifest)`` to the bundle's manifest.json."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def deep_manifest(bundle: Path, depth: int = 100_000) -> None:
    """A manifest whose 'options' nests ``depth`` lists deep."""
    text = (bundle / "manifest.json").read_text().rstrip()
    (bundle / "manifest.json").write_text(text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")


def huge_manifest(bundle: Path, size: int = 65 << 20) -> None:
    """A manifest.json of ``size`` bytes (sparse: a valid start, then zeros)."""
    with open(bundle / "manifest.json", "r+b") as fh:
        fh.truncate(size)


def malformed_png(width: int = 32, height: int = 24) -> bytes:
    """A PNG whose IHDR chunk is 5 bytes long, with a wrong CRC."""
    body = zlib.compress(b"\0" * (height * (width * 3 + 1)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 5)
        + b"IHDR"
        + struct.pack(">IB", width, 8)
        + b"\0\0\0\0"
        + struct.pack(">I", len(body))
        + b"IDAT"
        + body
        + b"\0\0\0\0"
        + b"\0\0\0\0IEND\xaeB`\x82"
    )


def declared_png(width: int, height: int, body: bytes | None = None) -> bytes:
    """An RGB PNG declaring width x height pixels; its image data ``body``, by default 1 MB of zeros deflated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(bytes(1 << 20)) if body is None else body
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
