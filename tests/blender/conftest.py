"""Fixtures for the add-on tests.

Plain-Python tests (client, bundle reader, conversion, build) need no Blender.
Tests taking the ``addon`` fixture run in real Blender (``bpy`` 5.0.1 as a
module) and skip with the reason when it does not import. The extension zip
made by build.py is installed with ``extensions.package_install_files`` into a
throwaway user folder (``BLENDER_USER_RESOURCES``, set here before bpy loads).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bl_ext.user_default.panst3r"
_USER_DIR = None
if "bpy" not in sys.modules:  # Blender reads it once, when bpy is imported
    _USER_DIR = tempfile.mkdtemp(prefix="panst3r-blender-user-")
    os.environ["BLENDER_USER_RESOURCES"] = _USER_DIR


def load_build_script():
    """The repository's build.py as a module (by path: PyPA's ``build`` package may own the name)."""
    if "panst3r_build_script" not in sys.modules:
        spec = importlib.util.spec_from_file_location("panst3r_build_script", ROOT / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["panst3r_build_script"]


def import_bpy():
    """bpy, or skip the calling test with the reason."""
    try:
        import bpy
    except (ImportError, OSError) as exc:
        pytest.skip(
            f"Blender as a Python module is not importable here (pip install bpy==5.0.1, Python 3.11 only): {exc}"
        )
    return bpy


@dataclass
class Addon:
    """The enabled add-on inside bpy."""

    bpy: object
    package: str
    mode: str  # "extension" (installed from the zip) or "legacy" (source folder on sys.path)

    def module(self, name: str):
        """A submodule of the installed add-on, e.g. ``addon.module("client.jobs")``."""
        return importlib.import_module(f"{self.package}.{name}")

    @property
    def preferences(self):
        return self.bpy.context.preferences.addons[self.package].preferences


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory) -> Path:
    """The 3-view, 5-segment bundle of tests/bundle_utils.py written by the engine's writer."""
    from panst3r_engine.bundle.write import write_bundle
    from tests.bundle_utils import make_bundle_inputs

    return write_bundle(tmp_path_factory.mktemp("bundles") / "synthetic", *make_bundle_inputs())


@pytest.fixture(scope="session")
def room_bundle(tmp_path_factory) -> Path:
    """A 20k-point synthetic room (floor, wall, two chairs, a table), pitched 15° down."""
    from tests.blender.room import write_room_bundle

    return write_room_bundle(tmp_path_factory.mktemp("bundles") / "room", 20000)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension zip, built by build.py into a temporary folder."""
    return load_build_script().build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def addon(extension_zip) -> Addon:
    """Blender with the PanSt3R extension installed from the zip and enabled."""
    bpy = import_bpy()
    user = Path(bpy.utils.resource_path("USER")).resolve()
    if _USER_DIR is not None and user.is_relative_to(Path(_USER_DIR).resolve()):
        result = bpy.ops.extensions.package_install_files(
            filepath=str(extension_zip), repo="user_default", enable_on_install=True
        )
        assert result == {"FINISHED"} and PACKAGE in bpy.context.preferences.addons
        found = Addon(bpy, PACKAGE, "extension")
    else:  # bpy was loaded before this folder's tests with the real user folder: never install there
        import addon_utils

        sys.path.insert(0, str(ROOT))
        addon_utils.enable("blender_addon", default_set=True)
        found = Addon(bpy, "blender_addon", "legacy")
    yield found
    found.module("runtime").shutdown()


@pytest.fixture
def scene(addon):
    """A new empty file (the add-on stays enabled)."""
    bpy = addon.bpy
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene
