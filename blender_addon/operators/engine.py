"""Engine management: create its environment, download weights, start and stop it."""

from __future__ import annotations

import bpy

from .. import runtime
from .run import start_task


def _require_online(operator, what: str) -> bool:
    if bpy.app.online_access:
        return True
    operator.report(
        {"ERROR"}, f"Online access is off, so {what} cannot be downloaded; allow it in Preferences > System > Network"
    )
    return False


class PANST3R_OT_create_engine_env(bpy.types.Operator):
    """Create a Python environment in the extension's user folder and install torch and the bundled engine"""

    bl_idname = "panst3r.create_engine_env"
    bl_label = "Create Engine Environment"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not runtime.manager.busy

    def execute(self, context):
        from ..client.environment import environment_steps, find_engine_source
        from ..client.jobs import CommandJob
        from ..preferences import addon_dir, get_preferences, user_dir

        if not _require_online(self, "torch and the engine's packages"):
            return {"CANCELLED"}
        prefs = get_preferences(context)

        def make_job() -> CommandJob:
            steps = environment_steps(user_dir("engine-env"), find_engine_source(addon_dir()), prefs.torch_variant)
            return CommandJob("Engine environment", steps, user_dir("logs") / "setup.log")

        return start_task(self, make_job, "Creating the engine environment; this downloads several GB")


class PANST3R_OT_download_weights(bpy.types.Operator):
    """Download the chosen PanSt3R weights (and the text model) with the engine's downloader"""

    bl_idname = "panst3r.download_weights"
    bl_label = "Download Weights"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not runtime.manager.busy

    def execute(self, context):
        from ..client.environment import weights_steps
        from ..client.jobs import CommandJob
        from ..preferences import WEIGHT_IDS, engine_python, get_preferences, user_dir

        prefs = get_preferences(context)
        if not prefs.accept_license:
            self.report({"ERROR"}, "Accept the PanSt3R weights licence in the add-on preferences first")
            return {"CANCELLED"}
        if prefs.weights not in WEIGHT_IDS:
            self.report({"ERROR"}, "Weights is set to a file on disk; choose PanSt3R v1 or v2 to download")
            return {"CANCELLED"}
        if not _require_online(self, "the weights"):
            return {"CANCELLED"}
        ids = [WEIGHT_IDS[prefs.weights]] + (["siglip-text"] if prefs.download_text_model else [])
        cache = bpy.path.abspath(prefs.cache_dir) if prefs.cache_dir else ""
        return start_task(
            self,
            lambda: CommandJob(
                "Weights", weights_steps(engine_python(prefs), ids, cache), user_dir("logs") / "weights.log"
            ),
            f"Downloading {', '.join(ids)}",
        )


class PANST3R_OT_engine_start(bpy.types.Operator):
    """Start the engine now (it also starts with the first run) so its model is loaded and warm"""

    bl_idname = "panst3r.engine_start"
    bl_label = "Start Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not runtime.manager.busy

    def execute(self, context):
        from ..client.jobs import CommandJob, Step
        from ..preferences import engine_settings, get_preferences, user_dir

        settings = engine_settings(get_preferences(context))
        if settings.mode == "REMOTE":
            self.report({"INFO"}, "A remote engine is started on its own machine; nothing to start here")
            return {"CANCELLED"}
        step = Step("starting the engine", func=lambda: runtime.host.connect(settings))
        return start_task(self, lambda: CommandJob("Engine", [step], user_dir("logs") / "setup.log"))


class PANST3R_OT_engine_stop(bpy.types.Operator):
    """Stop the local engine and free its memory"""

    bl_idname = "panst3r.engine_stop"
    bl_label = "Stop Engine"
    bl_options = {"REGISTER"}

    def execute(self, context):
        runtime.manager.cancel()
        runtime.host.stop()
        self.report({"INFO"}, "The PanSt3R engine is stopped")
        return {"FINISHED"}


classes = (PANST3R_OT_create_engine_env, PANST3R_OT_download_weights, PANST3R_OT_engine_start, PANST3R_OT_engine_stop)
