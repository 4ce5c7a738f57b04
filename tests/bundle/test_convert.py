"""``python -m panst3r_engine export BUNDLE --to FORMAT --out DIR``: every format, atomic writes, overwrite rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from panst3r_engine.bundle.write import write_bundle
from panst3r_engine.cli import main
from tests.bundle_utils import make_consistent_bundle_inputs

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {
    "colmap": {"sparse/0/cameras.txt", "sparse/0/images.txt", "sparse/0/points3D.txt", "images/IMG_0001.jpg"},
    "nerfstudio": {"transforms.json", "points3D.ply", "images/portrait.jpg", "panoptic/portrait.png"},
    "ply": {"wall_1.ply", "chair_2.ply", "unlabelled.ply"},
    "glb": {"points.glb"},
    "coco": {"panoptic.json", "panoptic/IMG_0002.png", "images/IMG_0002.jpg"},
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("convert") / "bundle", *make_consistent_bundle_inputs())


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_every_format_is_written(bundle: Path, tmp_path: Path, fmt: str, capsys) -> None:
    assert main(["export", str(bundle), "--to", fmt, "--out", str(tmp_path / "out")]) == 0
    assert EXPECTED[fmt] <= _files(tmp_path / "out")
    assert _siblings(tmp_path / "out") == ["out"]  # the staging folder is gone
    assert capsys.readouterr().out.strip().endswith(f"-> {tmp_path / 'out'}")


def test_ply_y_up_flips_y_and_z(bundle: Path, tmp_path: Path, capsys) -> None:
    from tests.bundle.test_exports import read_ply

    main(["export", str(bundle), "--to", "ply", "--out", str(tmp_path / "a")])
    main(["export", str(bundle), "--to", "ply", "--out", str(tmp_path / "b"), "--y-up"])
    a, b = read_ply(tmp_path / "a" / "wall_1.ply"), read_ply(tmp_path / "b" / "wall_1.ply")
    assert (b["x"] == a["x"]).all() and (b["y"] == -a["y"]).all() and (b["z"] == -a["z"]).all()
    assert main(["export", str(bundle), "--to", "glb", "--out", str(tmp_path / "c"), "--y-up"]) == 2
    assert "--y-up applies to --to ply only" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_an_empty_existing_folder_is_used(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert main(["export", str(bundle), "--to", "colmap", "--out", str(tmp_path / "out")]) == 0
    assert pycolmap.Reconstruction(str(tmp_path / "out" / "sparse" / "0")).num_reg_images() == 3


def test_a_non_empty_folder_is_refused_without_overwrite(bundle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(bundle), "--to", "nerfstudio", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0]
    assert _files(out) == {"notes.txt"} and _siblings(out) == ["out"]


def test_overwrite_replaces_only_the_files_it_writes(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "images" / "other.jpg").write_text("mine too")
    (out / "transforms.json").write_text("{}")
    assert main(["export", str(bundle), "--to", "nerfstudio", "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "images" / "other.jpg").read_text() == "mine too"
    assert len(json.loads((out / "transforms.json").read_text())["frames"]) == 3
    assert EXPECTED["nerfstudio"] <= _files(out) and _siblings(out) == ["out"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_overwrite_never_writes_through_a_link(bundle: Path, tmp_path: Path, capsys) -> None:
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "images").symlink_to(elsewhere, target_is_directory=True)
    assert main(["export", str(bundle), "--to", "colmap", "--out", str(out), "--overwrite"]) == 2
    assert "in the way" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["images"]
    assert _siblings(elsewhere) == ["elsewhere", "out"]  # no staging folder left


def test_a_file_as_output_and_a_missing_bundle_are_one_sentence(bundle: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["export", str(bundle), "--to", "glb", "--out", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--to", "glb", "--out", str(tmp_path / "out")]) == 2
    assert "not a result bundle" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_command_line_contract(bundle: Path, tmp_path: Path) -> None:
    """The real ``python -m panst3r_engine export`` (other checks call it so): exit 0, then 2 with one line."""

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "panst3r_engine", "export", str(bundle), *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

    done = run("--to", "colmap", "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert pycolmap.Reconstruction(str(tmp_path / "c" / "sparse" / "0")).num_points3D() > 0
    again = run("--to", "colmap", "--out", str(tmp_path / "c"))
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "Traceback" not in again.stderr
    assert run("--to", "obj", "--out", str(tmp_path / "d")).returncode == 2  # argparse names the choices


def test_exporting_never_loads_torch(bundle: Path, tmp_path: Path) -> None:
    """Reading and exporting a bundle needs numpy and Pillow only: the command starts in a second or two."""
    code = (
        "import sys; from panst3r_engine.cli import main; "
        f"assert main(['export', {str(bundle)!r}, '--to', 'nerfstudio', '--out', {str(tmp_path / 'n')!r}]) == 0; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_layout_is_written(bundle: Path, tmp_path: Path) -> None:
    assert main(["export", str(bundle), "--to", "layout", "--out", str(tmp_path / "out")]) == 0
    assert _files(tmp_path / "out") == {"layout.json"} and _siblings(tmp_path / "out") == ["out"]
    document = json.loads((tmp_path / "out" / "layout.json").read_text(encoding="utf-8"))
    assert document["boxes"] and {b["segment"] for b in document["boxes"]} <= set(range(1, 1000))


def test_readme_export_command_runs_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    import shlex

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Exports\n", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    words = shlex.split(command, comments=True)
    assert words[:3] == ["python", "-m", "panst3r_engine"]
    write_bundle(tmp_path / "out" / "room", *make_consistent_bundle_inputs())
    monkeypatch.chdir(tmp_path)
    assert main(words[3:]) == 0, capsys.readouterr().err
    assert pycolmap.Reconstruction(str(tmp_path / "out" / "room_colmap" / "sparse" / "0")).num_reg_images() == 3


@pytest.mark.slow  # a real job on 2 cores: about 25 s
def test_a_real_job_exports_and_reads_back(tmp_path: Path) -> None:
    """A bundle from the real pipeline (tiny random checkpoint): both training formats read back."""
    from PIL import Image

    from panst3r_engine.bundle.read import read_bundle
    from panst3r_engine.model.checkpoints import write_random_checkpoint
    from panst3r_engine.pipeline.options import JobOptions
    from panst3r_engine.pipeline.run import run_job
    from tests.bundle.test_interchange import check_transforms_schema
    from tests.pipeline.conftest import textured

    photos = []
    for i in range(3):
        photos.append(tmp_path / f"s{i}.png")
        Image.fromarray(textured(128, 96, 20 + i)).save(photos[-1])
    ckpt = write_random_checkpoint(tmp_path / "tiny.pth", "v2", "tiny", seed=5)
    options = JobOptions(weights=str(ckpt), vocab_embeddings="random", device="cpu", conf_threshold=1.0, resize="none")
    bundle = read_bundle(run_job(photos, tmp_path / "job", options).bundle)
    assert main(["export", str(bundle.path), "--to", "colmap", "--out", str(tmp_path / "c")]) == 0
    assert main(["export", str(bundle.path), "--to", "nerfstudio", "--out", str(tmp_path / "n")]) == 0
    model = pycolmap.Reconstruction(str(tmp_path / "c" / "sparse" / "0"))
    valid = [cam for cam in bundle.manifest["cameras"] if cam.get("valid", True)]
    assert model.num_reg_images() == len(valid) and model.num_points3D() == len(bundle.points["xyz"])
    for image in model.images.values():
        cam = bundle.manifest["cameras"][bundle.stems.index(image.name.removesuffix(".jpg"))]
        np.testing.assert_allclose(image.camera.calibration_matrix(), cam["K"], atol=1e-9)
        rows = [p.point3D_id - 1 for p in image.points2D]
        np.testing.assert_allclose([p.xy for p in image.points2D], bundle.points["pixel"][rows] + 0.5)
    doc = json.loads((tmp_path / "n" / "transforms.json").read_text())
    check_transforms_schema(doc, tmp_path / "n")
    assert len(doc["frames"]) == len(valid)


def test_the_working_folder_as_output(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """``--out .`` in an empty folder: the files land in it, and the folder itself is never replaced."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", str(bundle), "--to", "glb", "--out", "."]) == 0
    assert Path.cwd() == here and here.is_dir() and _files(here) == {"points.glb"}
    assert _siblings(here) == ["here"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
@pytest.mark.parametrize("fmt", ["colmap", "nerfstudio"])
def test_a_linked_photo_in_the_bundle_is_refused(tmp_path: Path, fmt: str, capsys) -> None:
    """A received bundle whose photo links elsewhere: refused in one sentence, nothing copied or written."""
    bundle = write_bundle(tmp_path / "bundle", *make_consistent_bundle_inputs())
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not yours")
    (bundle / "images" / "IMG_0002.jpg").unlink()
    (bundle / "images" / "IMG_0002.jpg").symlink_to(secret)
    assert main(["export", str(bundle), "--to", fmt, "--out", str(tmp_path / "out")]) == 2
    assert "is a link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "secret.jpg"]
