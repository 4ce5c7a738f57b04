"""splats.ply: INRIA layout plus labels, bit-exact round trip, foreign files, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from panst3r_engine.bundle.spec import PLY_REQUIRED
from panst3r_engine.splats import SplatModel, SplatsFileError, read_splats_ply, write_splats_ply
from panst3r_engine.splats import export as export_module
from panst3r_engine.splats.export import read_splats_array, splats_to_array
from panst3r_engine.splats.model import TENSOR_FIELDS


def random_model(n: int, degree: int, seed: int = 0) -> SplatModel:
    g = torch.Generator().manual_seed(seed)
    model = SplatModel(
        means=torch.randn(n, 3, generator=g) * 10,
        scales=torch.randn(n, 3, generator=g) - 4,
        quats=torch.randn(n, 4, generator=g),
        opacities=torch.randn(n, generator=g) * 3,
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=g),
        segment=torch.randint(0, 70000, (n,), generator=g, dtype=torch.int32),
        class_id=torch.randint(-1, 200, (n,), generator=g, dtype=torch.int32),
        background=torch.rand(3, generator=g),
    )
    # Values that text or lossy paths would not keep: -0.0, subnormal, extremes, an odd background.
    model.means[0, 0] = -0.0
    model.scales[0, 1] = 1e-45
    model.opacities[1] = torch.finfo(torch.float32).max
    model.background[0] = 1 / 3
    model.segment[2], model.class_id[2] = 2**31 - 1, -(2**31)
    return model


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_is_bit_exact(tmp_path: Path, degree: int) -> None:
    model = random_model(257, degree)
    path = write_splats_ply(model, tmp_path / "splats.ply")
    back = read_splats_ply(path)
    for name in TENSOR_FIELDS:
        a, b = getattr(model, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(_bits(a), _bits(b)), name
    stored, _ = read_splats_array(path)
    assert stored.tobytes() == splats_to_array(model).tobytes()  # every property, normals (zero) included
    assert (stored["nx"] == 0).all() and (stored["ny"] == 0).all() and (stored["nz"] == 0).all()
    again = write_splats_ply(back, tmp_path / "again.ply")
    assert again.read_bytes() == path.read_bytes()


def test_header_is_inria_layout(tmp_path: Path) -> None:
    path = write_splats_ply(random_model(5, 1), tmp_path / "s.ply")
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n") + len(b"end_header\n")].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element vertex 5" in header
    props = [line.split()[1:] for line in header if line.startswith("property")]
    expected = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(9)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    assert props == [["float", name] for name in expected] + [["int", "segment"], ["int", "class"]]
    assert len(data) - len("\n".join(header)) - 1 == 5 * (len(expected) * 4 + 8)


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    model = random_model(3, 1)
    stored, _ = read_splats_array(write_splats_ply(model, tmp_path / "s.ply"))
    # INRIA: f_rest_{c * K + k} holds coefficient k of channel c (K = 3 for degree 1).
    assert stored["f_rest_4"][1] == model.shN[1, 1, 1].item()
    assert stored["f_rest_6"][2] == model.shN[2, 0, 2].item()


def test_reads_gsplat_export_without_labels(tmp_path: Path) -> None:
    from gsplat import export_splats

    model = random_model(20, 1)
    path = tmp_path / "gsplat.ply"
    export_splats(
        model.means, model.scales, model.quats, model.opacities, model.sh0, model.shN, format="ply", save_to=str(path)
    )
    back = read_splats_ply(path)
    for name in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(getattr(back, name), getattr(model, name)), name
    assert back.segment.eq(0).all() and back.class_id.eq(-1).all() and back.background.eq(0).all()


def test_refusals(tmp_path: Path) -> None:
    cases = {
        "not_ply": b"hello\n",
        "ascii": b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n",
        "no_props": b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0",
        "truncated": (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
            + b"".join(b"property float %s\n" % n.encode() for n in PLY_REQUIRED)
            + b"end_header\n"
            + b"\0" * 56
        ),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.ply"
        path.write_bytes(data)
        with pytest.raises(SplatsFileError):
            read_splats_ply(path)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "splats.ply"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(export_module.os, "replace", broken)
    with pytest.raises(OSError):
        write_splats_ply(random_model(4, 0), target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["splats.ply"]


def test_a_huge_declared_count_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.ply"
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\nend_header\n"
    path.write_bytes(header.encode() + b"\0" * 8)
    with pytest.raises(SplatsFileError, match="declares 1000000000000 Gaussians but holds 2"):
        read_splats_ply(path)


def test_the_renderer_does_not_follow_a_linked_splats_file(tmp_path):
    from panst3r_engine.bundle.checks import BundleError
    from panst3r_engine.splats.render import load_bundle_splats

    outside = tmp_path / "secret.ply"
    outside.write_bytes(b"ply\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "splats.ply").symlink_to(outside)
    with pytest.raises(BundleError, match="link"):
        load_bundle_splats(bundle)
