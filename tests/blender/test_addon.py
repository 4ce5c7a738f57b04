"""The extension in real Blender: installed from the built zip, registered, preferences, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blender.conftest import import_bpy

ROOT = Path(__file__).resolve().parents[2]

NO_TORCH_SCRIPT = """
import json, os, sys, tempfile
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp()
import bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
enabled = "bl_ext.user_default.panst3r" in bpy.context.preferences.addons
result = bpy.ops.panst3r.import_bundle(directory=sys.argv[2])
objects = sum("segment" in ob for ob in bpy.data.objects)
print("RESULT " + json.dumps({"enabled": enabled, "import": sorted(result), "objects": objects,
                              "torch": "torch" in sys.modules}))
"""


def test_installed_as_an_extension(addon) -> None:
    if addon.mode != "extension":
        pytest.skip(
            "bpy was imported before this folder's conftest, so the zip could not be installed into a "
            "throwaway user folder; the add-on was enabled from the source folder instead"
        )
    bpy = addon.bpy
    assert addon.package == "bl_ext.user_default.panst3r"
    installed = Path(addon.module("preferences").addon_dir())
    assert (installed / "blender_manifest.toml").is_file() and (installed / "engine" / "pyproject.toml").is_file()
    user = Path(bpy.utils.extension_path_user(addon.package, path="engine-env", create=True))
    assert user.is_dir() and addon.package.split(".")[-1] in user.parts


def test_registration(addon) -> None:
    bpy = addon.bpy
    for idname in (
        "import_bundle",
        "run",
        "cancel",
        "select_class",
        "extract_instance",
        "add_photos",
        "add_blend_images",
        "remove_photo",
        "create_engine_env",
        "download_weights",
        "engine_start",
        "engine_stop",
        "use_camera",
        "show_all",
    ):
        assert hasattr(bpy.ops.panst3r, idname), idname
    panel = bpy.types.VIEW3D_PT_panst3r
    assert panel.bl_category == "PanSt3R" and panel.bl_region_type == "UI"
    assert hasattr(bpy.context.scene, "panst3r")


def test_preferences(addon) -> None:
    prefs = addon.preferences
    assert type(prefs).bl_idname == addon.package
    for name, prop in type(prefs).bl_rna.properties.items():
        if name not in ("rna_type", "bl_idname"):
            assert prop.description, f"preference {name} has no description"
    prefs.engine_mode, prefs.remote_url, prefs.remote_token = "REMOTE", "http://gpu:8765", "abc"
    settings = addon.module("preferences").engine_settings(prefs)
    assert (settings.mode, settings.url, settings.token) == ("REMOTE", "http://gpu:8765", "abc")
    prefs.engine_mode, prefs.weights, prefs.device = "LOCAL", "V1", "cpu"
    local = addon.module("preferences").engine_settings(prefs).local
    assert local.argv()[3:] == [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--weights",
        "v1",
        "--device",
        "cpu",
        "--jobs-dir",
        str(local.jobs_dir),
    ]
    assert local.python.endswith(("engine-env/bin/python", "python.exe"))
    prefs.weights, prefs.device = "V2", "auto"


def test_downloads_respect_online_access_and_the_licence(addon) -> None:
    bpy = addon.bpy
    assert bpy.app.online_access is False  # the bpy module's default
    prefs = addon.preferences
    prefs.accept_license = False
    with pytest.raises(RuntimeError, match="Accept the PanSt3R weights licence"):
        bpy.ops.panst3r.download_weights()
    prefs.accept_license = True
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.panst3r.download_weights()
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.panst3r.create_engine_env()
    prefs.engine_mode, prefs.remote_url = "REMOTE", "https://gpu.example.org:8765"
    try:
        with pytest.raises(RuntimeError, match="Online access is off, so the remote engine"):
            bpy.ops.panst3r.run()
    finally:
        prefs.engine_mode, prefs.accept_license = "LOCAL", False


def test_registering_and_importing_never_loads_torch(
    extension_zip: Path, synthetic_bundle: Path, tmp_path: Path
) -> None:
    """In a fresh interpreter: this pytest process has torch loaded by other test folders."""
    import_bpy()
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(extension_zip), str(synthetic_bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(line[len("RESULT ") :])
    assert result == {"enabled": True, "import": ["FINISHED"], "objects": 5, "torch": False}


def test_panel_settings_become_job_options(addon, scene) -> None:
    settings, run = scene.panst3r, addon.module("operators.run")
    settings.vocab, settings.keyframes, settings.postprocess, settings.splats = "ade20k", 0, "AUTO", False
    assert run._options(settings) == {"vocab": "ade20k", "conf_threshold": 3.0, "splats": False}
    settings.vocab, settings.custom_vocab = "CUSTOM", "chair, table\nsofa,, chair"
    settings.keyframes, settings.postprocess, settings.splats, settings.splat_steps = 8, "qubo", True, 500
    assert run._options(settings) == {
        "vocab": ["chair", "table", "sofa"],
        "conf_threshold": 3.0,
        "splats": True,
        "splat_steps": 500,
        "keyframes": 8,
        "postprocess": "qubo",
    }
    text = addon.bpy.data.texts.new("classes")
    text.write("lamp\n\n  plant \n")
    settings.custom_vocab_text = text
    assert settings.vocabulary() == ["lamp", "plant"]


class _Layout:
    """A stand-in for UILayout (panels cannot draw in background mode) that checks every prop and operator."""

    def __init__(self, bpy) -> None:
        self.bpy, self.calls = bpy, []

    def _child(self, *args, **kwargs):
        return _Layout(self.bpy)

    row = column = box = _child

    def panel(self, idname, default_closed=False):
        return _Layout(self.bpy), _Layout(self.bpy)

    def label(self, text="", icon="NONE"):
        assert isinstance(text, str)
        self.calls.append(("label", text))

    def progress(self, factor=0.0, text=""):
        assert 0.0 <= factor <= 1.0
        self.calls.append(("progress", text))

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.calls.append(("prop", name))

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        assert hasattr(getattr(self.bpy.ops, module), name), idname
        self.calls.append(("operator", idname))
        return type("OperatorProperties", (), {})()

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs):
        assert hasattr(self.bpy.types, list_type) and prop in data.bl_rna.properties


def test_panels_and_preferences_draw(addon, scene, synthetic_bundle: Path) -> None:
    bpy = addon.bpy
    bpy.ops.panst3r.import_bundle(directory=str(synthetic_bundle))
    bpy.context.view_layer.objects.active = bpy.data.objects["chair.001"]
    scene.panst3r.vocab, scene.panst3r.splats = "CUSTOM", True
    panel_module = addon.module("ui.panel")
    for cls in panel_module.classes:
        if issubclass(cls, bpy.types.Panel):
            stub = type("PanelStub", (), {"layout": _Layout(bpy)})()
            cls.draw(stub, bpy.context)
    prefs, preferences = addon.preferences, addon.module("preferences")
    for mode, weights in (("LOCAL", "V2"), ("REMOTE", "CUSTOM")):
        prefs.engine_mode, prefs.weights = mode, weights
        for draw in (preferences._draw_engine, preferences._draw_weights, preferences._draw_storage):
            draw(_Layout(bpy), prefs)  # what PanSt3RPreferences.draw calls with its own layout
    prefs.engine_mode, prefs.weights = "LOCAL", "V2"
