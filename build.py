"""Build the Blender extension zip: ``python build.py`` -> dist/<id>-<version>.zip.

The zip holds the add-on (``blender_addon/*`` at its root, with
blender_manifest.toml) and the engine source under ``engine/``
(``panst3r_engine/``, pyproject.toml, LICENSE, README.md), which the add-on's
"Create Engine Environment" button pip-installs into its own venv. The bundle
format's contract, ``panst3r_engine/bundle/spec.py``, is vendored into the
add-on as ``bundle/_spec.py``, the layout-proxy geometry
``panst3r_engine/bundle/layout.py`` as ``bundle/_layout.py`` and the
COLMAP/nerfstudio writers ``panst3r_engine/bundle/interchange.py`` as
``bundle/_interchange.py`` (the add-on never imports the engine; see
:data:`VENDORED`): ``main`` refreshes the committed copies and the zip always
takes the engine's files. The
manifest is validated in Python (required keys, semver, SPDX licences,
permission reasons), then by Blender's own validator when one is available
(``blender --command extension validate``, or the ``blender_ext.py`` inside the
bpy module).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
ENGINE = ROOT / "panst3r_engine"
SPEC = ENGINE / "bundle" / "spec.py"
VENDORED_SPEC = "bundle/_spec.py"  # relative to ADDON
# engine modules (numpy + stdlib only) the add-on holds a byte-identical copy of: add-on path -> engine file
VENDORED = {
    VENDORED_SPEC: SPEC,
    "bundle/_layout.py": ENGINE / "bundle" / "layout.py",  # layout proxies and layout.json
    "bundle/_interchange.py": ENGINE / "bundle" / "interchange.py",  # COLMAP and nerfstudio writers
}
REQUIRED = {
    "schema_version": str,
    "id": str,
    "version": str,
    "name": str,
    "tagline": str,
    "maintainer": str,
    "type": str,
    "license": list,
    "blender_version_min": str,
}
PERMISSIONS = {"files", "network", "clipboard", "camera", "microphone"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
EXCLUDED_DIRS = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".zip", ".orig", ".rej"}
ENGINE_README = "# PanSt3R engine\n\nThe engine bundled with the PanSt3R Blender extension. See the project README.\n"


class ManifestError(ValueError):
    """A manifest problem, as a sentence."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def validate_manifest(manifest: dict) -> list[str]:
    """Every problem of a blender_manifest.toml (an empty list when valid)."""
    problems = []
    for key, kind in REQUIRED.items():
        if key not in manifest:
            problems.append(f"'{key}' is missing")
        elif not isinstance(manifest[key], kind):
            problems.append(f"'{key}' must be a {kind.__name__}")
    if problems:
        return problems
    if manifest["schema_version"] != "1.0.0":
        problems.append("'schema_version' must be \"1.0.0\"")
    if not manifest["id"].isidentifier() or manifest["id"].startswith("_"):
        problems.append(f"'id' {manifest['id']!r} must be a Python identifier not starting with '_'")
    if not SEMVER.match(manifest["version"]):
        problems.append(f"'version' {manifest['version']!r} is not semantic versioning (MAJOR.MINOR.PATCH)")
    if manifest["type"] not in ("add-on", "theme"):
        problems.append('\'type\' must be "add-on" or "theme"')
    tagline = manifest["tagline"]
    if not tagline or len(tagline) > 64 or tagline[-1] in ".!?,;:":
        problems.append("'tagline' must be 1-64 characters without trailing punctuation")
    if not manifest["license"] or not all(
        isinstance(v, str) and re.fullmatch(r"SPDX:[A-Za-z0-9.+-]+", v) for v in manifest["license"]
    ):
        problems.append("'license' must be a non-empty list of \"SPDX:<identifier>\" strings")
    if not re.fullmatch(r"\d+\.\d+\.\d+", manifest["blender_version_min"]) or _version_tuple(
        manifest["blender_version_min"]
    ) < (4, 2, 0):
        problems.append("'blender_version_min' must be a version X.Y.Z of at least 4.2.0")
    permissions = manifest.get("permissions", {})
    if not isinstance(permissions, dict):
        problems.append("'permissions' must be a table of permission = \"reason\"")
        permissions = {}
    for key, reason in permissions.items():
        if key not in PERMISSIONS:
            problems.append(f"unknown permission {key!r}; use {', '.join(sorted(PERMISSIONS))}")
        elif not isinstance(reason, str) or not reason.strip() or len(reason) > 64 or reason.rstrip()[-1] in ".!?":
            problems.append(f"permission {key!r} needs a reason of 1-64 characters without a final period")
    return problems


def _included(path: Path, base: Path) -> bool:
    """A plain file under base, outside caches and build leftovers."""
    relative = path.relative_to(base)
    return (
        path.is_file()
        and path.suffix not in EXCLUDED_SUFFIXES
        and not any(part in EXCLUDED_DIRS or part.endswith(".egg-info") for part in relative.parts)
    )


def vendor_spec(target: Path | None = None) -> bool:
    """Copy the engine's bundle spec into the add-on byte for byte; True when the copy changed."""
    return vendor(VENDORED_SPEC, target)


def vendor(relative: str, target: Path | None = None) -> bool:
    """Copy one engine module of :data:`VENDORED` into the add-on byte for byte; True when the copy changed."""
    target = target or ADDON / relative
    data = VENDORED[relative].read_bytes()
    if target.is_file() and target.read_bytes() == data:
        return False
    target.write_bytes(data)
    return True


def build(out_dir: Path) -> Path:
    """Write dist/<id>-<version>.zip; raises ManifestError on an invalid manifest."""
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    problems = validate_manifest(manifest)
    if problems:
        raise ManifestError("blender_manifest.toml is invalid: " + "; ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(ADDON.rglob("*")):
            if _included(path, ADDON) and path.relative_to(ADDON).as_posix() not in VENDORED:
                zf.write(path, path.relative_to(ADDON).as_posix())
        for relative, source in VENDORED.items():  # the engine's files, even when a committed copy is stale
            zf.write(source, relative)
        for path in sorted(ENGINE.rglob("*")):
            if _included(path, ROOT):
                zf.write(path, f"engine/{path.relative_to(ROOT).as_posix()}")
        for name in ("pyproject.toml", "LICENSE"):
            zf.write(ROOT / name, f"engine/{name}")
        if (ROOT / "README.md").is_file():
            zf.write(ROOT / "README.md", "engine/README.md")
        else:  # pyproject.toml names a readme; pip refuses to build without it
            zf.writestr("engine/README.md", ENGINE_README)
    tmp.replace(target)
    return target


def _blender_validator() -> list[str] | None:
    """A command that validates an extension zip with Blender's own validator, if one is installed."""
    blender = shutil.which("blender")
    if blender:
        return [blender, "--background", "--factory-startup", "--command", "extension", "validate"]
    spec = importlib.util.find_spec("bpy")  # finds the module without importing it
    if spec is not None and spec.origin:
        found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return [sys.executable, str(found[-1]), "validate"]
    return None


def validate_with_blender(zip_path: Path) -> str:
    """Run Blender's validator on the zip; returns how it was checked (raises ManifestError on failure)."""
    command = _blender_validator()
    if command is None:
        return "validated in Python (Blender's validator is not installed)"
    result = subprocess.run([*command, str(zip_path)], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise ManifestError(
            f"Blender's validator refused {zip_path.name}: {(result.stdout + result.stderr).strip()[-800:]}"
        )
    return f"validated in Python and by {Path(command[1] if command[0] == sys.executable else command[0]).name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument(
        "--skip-blender-validate", action="store_true", help="only the Python manifest checks, not Blender's validator"
    )
    args = parser.parse_args(argv)
    for relative, source in VENDORED.items():
        if vendor(relative):
            print(f"refreshed blender_addon/{relative} from {source.relative_to(ROOT).as_posix()}")
    try:
        path = build(args.out)
        how = "validated in Python" if args.skip_blender_validate else validate_with_blender(path)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}  ({path.stat().st_size / 1e3:.0f} kB; {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
