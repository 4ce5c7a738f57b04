"""build.py: the extension zip's layout and the manifest checks (plain Python)."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.blender.conftest import load_build_script

ROOT = Path(__file__).resolve().parents[2]
build = load_build_script()


def test_zip_layout(extension_zip: Path) -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())
    assert extension_zip.name == f"{manifest['id']}-{manifest['version']}.zip" == "panst3r-0.1.0.zip"
    names = set(zipfile.ZipFile(extension_zip).namelist())
    for required in ("blender_manifest.toml", "__init__.py", "preferences.py", "client/engine.py", "bundle/read.py",
                     "importers/convert.py", "operators/run.py", "ui/panel.py", "engine/pyproject.toml",
                     "engine/LICENSE", "engine/README.md", "engine/panst3r_engine/__init__.py",
                     "engine/panst3r_engine/service/server.py", "engine/panst3r_engine/vocab/data/coco.json"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("blender_addon/", "tests/", "dist/"))]
    source = {p.relative_to(ROOT / "blender_addon").as_posix() for p in (ROOT / "blender_addon").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert source <= names


def test_manifest_is_valid() -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())
    assert build.validate_manifest(manifest) == []
    assert manifest["license"] == ["SPDX:MIT"] and manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}


@pytest.mark.parametrize("change,problem", [
    ({"version": "1.0"}, "semantic versioning"),
    ({"license": ["MIT"]}, "SPDX"),
    ({"blender_version_min": "4.1.0"}, "at least 4.2.0"),
    ({"tagline": "Ends with a period."}, "tagline"),
    ({"permissions": {"network": ""}}, "needs a reason"),
    ({"permissions": {"internet": "Talk"}}, "unknown permission"),
    ({"id": "pan-st3r"}, "Python identifier"),
    ({"schema_version": "2.0.0"}, "schema_version"),
])
def test_manifest_problems_are_named(change: dict, problem: str) -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())
    problems = build.validate_manifest({**manifest, **change})
    assert len(problems) == 1 and problem in problems[0], problems


def test_missing_keys_are_listed() -> None:
    problems = build.validate_manifest({"id": "x"})
    assert "'maintainer' is missing" in problems and "'license' is missing" in problems


def test_main_prints_the_path(tmp_path: Path, capsys) -> None:
    assert build.main(["--out", str(tmp_path), "--skip-blender-validate"]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "panst3r-0.1.0.zip"))
