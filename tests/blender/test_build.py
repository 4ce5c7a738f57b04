"""build.py: the extension zip's layout and the manifest checks (plain Python)."""

from __future__ import annotations

import ast
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.blender.conftest import load_build_script

ROOT = Path(__file__).resolve().parents[2]
build = load_build_script()


def test_vendored_spec_is_the_engines() -> None:
    """Kept first in this file: test_main_prints_the_path runs build.py, which refreshes the copy."""
    engine = (ROOT / "panst3r_engine" / "bundle" / "spec.py").read_bytes()
    vendored = ROOT / "blender_addon" / "bundle" / "_spec.py"
    assert vendored.is_file() and vendored.read_bytes() == engine, (
        "blender_addon/bundle/_spec.py differs from panst3r_engine/bundle/spec.py: run python build.py"
    )


def test_vendored_layout_is_the_engines() -> None:
    engine = (ROOT / "panst3r_engine" / "bundle" / "layout.py").read_bytes()
    vendored = ROOT / "blender_addon" / "bundle" / "_layout.py"
    assert vendored.is_file() and vendored.read_bytes() == engine, (
        "blender_addon/bundle/_layout.py differs from panst3r_engine/bundle/layout.py: run python build.py"
    )
    assert build.VENDORED["bundle/_layout.py"] == ROOT / "panst3r_engine" / "bundle" / "layout.py"


def test_vendored_interchange_is_the_engines() -> None:
    """The add-on's COLMAP/nerfstudio writers are the engine's module, byte for byte."""
    engine = (ROOT / "panst3r_engine" / "bundle" / "interchange.py").read_bytes()
    vendored = ROOT / "blender_addon" / "bundle" / "_interchange.py"
    assert vendored.is_file() and vendored.read_bytes() == engine, (
        "blender_addon/bundle/_interchange.py differs from panst3r_engine/bundle/interchange.py: run python build.py"
    )


def test_vendored_modules_import_only_numpy_and_the_standard_library() -> None:
    allowed = {"numpy", *sys.stdlib_module_names}
    for source in build.VENDORED.values():
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            assert not [n for n in names if n.split(".")[0] not in allowed], f"{source.name} imports {names}"
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{source.name} has a relative import"


def test_vendor_spec_copies_byte_for_byte(tmp_path: Path) -> None:
    target = tmp_path / "_spec.py"
    target.write_text("FORMAT_MAJOR = 0\n")
    assert build.vendor_spec(target) is True
    assert target.read_bytes() == build.SPEC.read_bytes()
    assert build.vendor_spec(target) is False  # already current: not rewritten


def test_the_addon_never_imports_the_engine() -> None:
    for path in (ROOT / "blender_addon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] == "panst3r_engine"], f"{path} imports the engine"


def test_zip_layout(extension_zip: Path) -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())
    assert extension_zip.name == f"{manifest['id']}-{manifest['version']}.zip" == "panst3r-0.1.0.zip"
    names = set(zipfile.ZipFile(extension_zip).namelist())
    for required in (
        "blender_manifest.toml",
        "__init__.py",
        "preferences.py",
        "client/engine.py",
        "bundle/read.py",
        "importers/convert.py",
        "operators/run.py",
        "ui/panel.py",
        "engine/pyproject.toml",
        "engine/LICENSE",
        "engine/README.md",
        "engine/panst3r_engine/__init__.py",
        "engine/panst3r_engine/service/server.py",
        "engine/panst3r_engine/vocab/data/coco.json",
    ):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("blender_addon/", "tests/", "dist/"))]
    source = {
        p.relative_to(ROOT / "blender_addon").as_posix()
        for p in (ROOT / "blender_addon").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert source <= names
    for vendored, source in build.VENDORED.items():
        assert zipfile.ZipFile(extension_zip).read(vendored) == source.read_bytes(), vendored


def test_manifest_is_valid() -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())
    assert build.validate_manifest(manifest) == []
    assert manifest["license"] == ["SPDX:MIT"] and manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"version": "1.0"}, "semantic versioning"),
        ({"license": ["MIT"]}, "SPDX"),
        ({"blender_version_min": "4.1.0"}, "at least 4.2.0"),
        ({"tagline": "Ends with a period."}, "tagline"),
        ({"permissions": {"network": ""}}, "needs a reason"),
        ({"permissions": {"internet": "Talk"}}, "unknown permission"),
        ({"id": "pan-st3r"}, "Python identifier"),
        ({"schema_version": "2.0.0"}, "schema_version"),
    ],
)
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
