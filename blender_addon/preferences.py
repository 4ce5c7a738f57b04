"""Add-on preferences: which engine (local subprocess or remote URL), device, weights, storage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .client.engine import LocalConfig
from .client.environment import env_python
from .client.host import EngineSettings

ADDON_ID = __package__
LICENSE_URL = "https://github.com/naver/panst3r/blob/main/LICENSE"
WEIGHT_IDS = {"V1": "panst3r-v1-512", "V2": "panst3r-v2-512"}


def addon_dir() -> Path:
    return Path(__file__).resolve().parent


def user_dir(sub: str) -> Path:
    """A writable folder of this add-on: the extension's user folder, or Blender's user data folder."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path=sub, create=True))
    except ValueError:  # enabled as a legacy add-on (development checkout): no extension user folder
        path = Path(bpy.utils.user_resource("DATAFILES", path=f"panst3r/{sub}", create=True))
        path.mkdir(parents=True, exist_ok=True)
        return path


class PanSt3RPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_mode: EnumProperty(
        name="Engine",
        description="Where the PanSt3R engine runs",
        items=[
            ("LOCAL", "Local", "Start the engine as a subprocess on this computer"),
            ("REMOTE", "Remote", "Use an engine already running at a URL (needs online access unless local)"),
        ],
        default="LOCAL",
    )
    python_path: StringProperty(
        name="Engine Python",
        subtype="FILE_PATH",
        description="Python interpreter that has panst3r_engine installed; leave empty to use the environment "
        "created with 'Create Engine Environment'",
    )
    torch_variant: EnumProperty(
        name="Torch Build",
        description="Which PyTorch build 'Create Engine Environment' installs",
        items=[
            ("DEFAULT", "Default (PyPI)", "PyPI's build: CUDA on Linux, CPU on Windows, MPS on macOS"),
            ("CPU", "CPU only", "Smaller download, no GPU"),
            ("CU128", "CUDA 12.8", "NVIDIA GPUs with a recent driver"),
        ],
        default="DEFAULT",
    )
    remote_url: StringProperty(
        name="URL", description="Address of a running engine, e.g. http://gpu-box:8765", default="http://127.0.0.1:8765"
    )
    remote_token: StringProperty(
        name="Token", subtype="PASSWORD", description="Access token the remote engine printed when it started"
    )
    device: EnumProperty(
        name="Device",
        description="Where the local engine computes",
        items=[
            ("auto", "Automatic", "CUDA if present, then Apple MPS, then CPU"),
            ("cpu", "CPU", "Processor only"),
            ("cuda", "CUDA", "NVIDIA GPU"),
            ("mps", "Apple MPS", "Apple silicon GPU"),
        ],
        default="auto",
    )
    weights: EnumProperty(
        name="Weights",
        description="Which PanSt3R checkpoint the engine loads",
        items=[
            ("V2", "PanSt3R v2", "LoftUp upscaler, 512 px (recommended)"),
            ("V1", "PanSt3R v1", "PixelShuffle upscaler, 512 px"),
            ("CUSTOM", "File", "A checkpoint file on disk"),
        ],
        default="V2",
    )
    weights_path: StringProperty(
        name="Checkpoint", subtype="FILE_PATH", description="Checkpoint (.pth) used when Weights is 'File'"
    )
    accept_license: BoolProperty(
        name="I accept the PanSt3R weights licence (non-commercial)",
        description="The official checkpoints are licensed by NAVER LABS Europe for non-commercial use only; "
        "downloading them requires accepting that licence",
    )
    download_text_model: BoolProperty(
        name="Also download the text model",
        default=True,
        description="SigLIP text tower (Apache 2.0), needed for custom vocabularies",
    )
    cache_dir: StringProperty(
        name="Weights Cache",
        subtype="DIR_PATH",
        description="Where the engine keeps weights and class embeddings; empty = its default per-user cache folder",
    )
    startup_timeout: FloatProperty(
        name="Start-up Timeout",
        default=180.0,
        min=5.0,
        subtype="TIME_ABSOLUTE",
        description="Seconds to wait for a local engine to load its model and listen",
    )

    def draw(self, context) -> None:
        layout = self.layout
        _draw_engine(layout, self)
        _draw_weights(layout, self)
        _draw_storage(layout, self)


def _draw_job(layout, kinds: tuple[str, ...]) -> None:
    from . import runtime

    state = runtime.manager.poll()
    if state["kind"] in kinds and state["state"] != "idle":
        text = f"{state['title']}: {state['message'] or state['state']}"
        if state["state"] in ("done", "failed", "cancelled"):
            layout.label(text=state["error"] or text, icon="ERROR" if state["error"] else "INFO")
        else:
            layout.progress(factor=state["progress"], text=text[:90])


def _draw_engine(layout, prefs: PanSt3RPreferences) -> None:
    from . import runtime

    header, body = layout.panel("panst3r_prefs_engine", default_closed=False)
    header.label(text="Engine")
    if body is None:
        return
    body.prop(prefs, "engine_mode", expand=True)
    if prefs.engine_mode == "REMOTE":
        body.prop(prefs, "remote_url")
        body.prop(prefs, "remote_token")
        return
    body.prop(prefs, "python_path")
    row = body.row(align=True)
    row.prop(prefs, "torch_variant", text="")
    row.operator("panst3r.create_engine_env", icon="CONSOLE")
    body.label(text=f"Python: {engine_python(prefs)}", icon="FILE_SCRIPT")
    body.prop(prefs, "device")
    body.prop(prefs, "startup_timeout")
    row = body.row(align=True)
    row.label(text=f"Engine {runtime.host.describe()}")
    row.operator("panst3r.engine_start", text="", icon="PLAY")
    row.operator("panst3r.engine_stop", text="", icon="PAUSE")
    _draw_job(body, ("command",))
    if not bpy.app.online_access:
        body.label(
            text="Online access is off (Preferences > System): setup and downloads are disabled",
            icon="INTERNET_OFFLINE",
        )


def _draw_weights(layout, prefs: PanSt3RPreferences) -> None:
    header, body = layout.panel("panst3r_prefs_weights", default_closed=False)
    header.label(text="Weights")
    if body is None:
        return
    body.prop(prefs, "weights")
    if prefs.weights == "CUSTOM":
        body.prop(prefs, "weights_path")
        return
    row = body.row()
    row.prop(prefs, "accept_license")
    row.operator("wm.url_open", text="Read Licence", icon="URL").url = LICENSE_URL
    body.prop(prefs, "download_text_model")
    row = body.row()
    row.enabled = prefs.accept_license
    row.operator("panst3r.download_weights", icon="IMPORT")


def _draw_storage(layout, prefs: PanSt3RPreferences) -> None:
    header, body = layout.panel("panst3r_prefs_storage", default_closed=True)
    header.label(text="Storage")
    if body is not None:
        body.prop(prefs, "cache_dir")
        body.label(text=f"Jobs and results: {user_dir('results').parent}", icon="FILE_FOLDER")


_DEFAULTS = SimpleNamespace(
    engine_mode="LOCAL",
    python_path="",
    torch_variant="DEFAULT",
    remote_url="",
    remote_token="",
    device="auto",
    weights="V2",
    weights_path="",
    accept_license=False,
    download_text_model=True,
    cache_dir="",
    startup_timeout=180.0,
)


def get_preferences(context=None):
    """The add-on's preferences, or defaults when it was registered without an add-on entry (scripts)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else _DEFAULTS


def engine_python(prefs) -> str:
    if prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    return str(env_python(user_dir("engine-env")))


def weights_argument(prefs) -> str:
    if prefs.weights == "CUSTOM":
        return bpy.path.abspath(prefs.weights_path)
    return prefs.weights.lower()


def engine_settings(prefs) -> EngineSettings:
    """Plain settings for the client layer (read on the main thread; the job thread never touches bpy)."""
    if prefs.engine_mode == "REMOTE":
        return EngineSettings("REMOTE", url=prefs.remote_url.strip(), token=prefs.remote_token.strip())
    local = LocalConfig(
        python=engine_python(prefs),
        log_dir=user_dir("logs"),
        weights=weights_argument(prefs),
        device=prefs.device,
        jobs_dir=user_dir("jobs"),
        cache_dir=bpy.path.abspath(prefs.cache_dir) if prefs.cache_dir else "",
        startup_timeout=prefs.startup_timeout,
    )
    return EngineSettings("LOCAL", local=local)


classes = (PanSt3RPreferences,)
