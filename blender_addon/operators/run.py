"""Run and Cancel, and the timer that polls the job and imports its result.

Background mode (tests, ``blender -b``) has no event loop: timers never fire,
so ``execute`` only starts the job, and callers drive :func:`tick` (or
``runtime.manager.poll()`` then :func:`finish`) themselves.
"""

from __future__ import annotations

import json
import re
import shutil

import bpy
from bpy.props import StringProperty

from .. import runtime

POLL_SECONDS = 0.5


def _options(settings) -> dict:
    """The job options of the service API from the panel settings; 0 (Auto) is left out, so the engine decides."""
    options = {"vocab": settings.vocabulary(), "conf_threshold": settings.conf_threshold, "splats": settings.splats}
    if settings.splats and settings.splat_steps > 0:
        options["splat_steps"] = settings.splat_steps
    if settings.keyframes > 0:
        options["keyframes"] = settings.keyframes
    if settings.postprocess != "AUTO":
        options["postprocess"] = settings.postprocess
    from .photos import has_movie

    if has_movie(settings):
        if settings.video_frames > 0:
            options["video_frames"] = settings.video_frames
        if settings.video_fps > 0:
            options["video_fps"] = round(settings.video_fps, 4)
    return options


def _status_text(text: str | None) -> None:
    """Show (or clear, with None) the job in the status bar, where the UI has one."""
    context = bpy.context
    workspace = getattr(context, "workspace", None)
    if workspace is not None and hasattr(workspace, "status_text_set"):
        try:
            workspace.status_text_set(text)
        except (RuntimeError, TypeError):
            pass


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _report_error(message: str) -> None:
    print(f"PanSt3R: {message}")
    wm = bpy.context.window_manager
    if not bpy.app.background and wm.windows:
        wm.popup_menu(lambda menu, _: menu.layout.label(text=message[:200]), title="PanSt3R", icon="ERROR")


def finish(state: dict) -> None:
    """Handle a finished job once: import a run's bundle, or report the error."""
    job = runtime.manager.job
    if job is None or job.handled:
        return
    job.handled = True
    _status_text(None)
    if state["state"] == "failed":
        _report_error(state["error"] or "the job failed")
    elif state["state"] == "done" and state["kind"] == "run" and state["bundle"]:
        wm = bpy.context.window_manager
        override = {"window": wm.windows[0]} if wm.windows else {}
        from ..preferences import get_preferences

        prefs = get_preferences()
        engine = prefs.remote_url.strip() if prefs.engine_mode == "REMOTE" else "local"
        with bpy.context.temp_override(**override):
            bpy.ops.panst3r.import_bundle(directory=state["bundle"], job_id=state["job_id"] or "", engine=engine)
    _redraw()


def tick() -> float | None:
    """Timer callback: poll, show progress, finish; returns the next interval or None to stop."""
    state = runtime.manager.poll()
    if state["state"] == "idle":
        return None
    if state["state"] in ("done", "failed", "cancelled"):
        finish(state)
        return None
    _status_text(f"PanSt3R: {state['stage'] or state['state']} {state['progress'] * 100:.0f}% {state['message']}"[:120])
    _redraw()
    return POLL_SECONDS


def start_polling() -> None:
    """Poll the job from a timer (the GUI only: timers never run in background mode)."""
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=POLL_SECONDS, persistent=True)


def capitalised(exc: Exception) -> str:
    """An exception's sentence with a capital first letter, for a Blender report."""
    text = str(exc)
    return text[:1].upper() + text[1:]


def start_task(operator, make_job, message=None, errors: tuple = ()) -> set[str]:
    """Build a background task with ``make_job()``, start it and poll it; a failure becomes one report.

    ``message`` is the INFO report on success: a string, or a function of the started job.
    """
    from ..client.engine import EngineError

    try:
        job = make_job()
        runtime.manager.start(job)
    except (EngineError, *errors) as exc:
        operator.report({"ERROR"}, capitalised(exc))
        return {"CANCELLED"}
    start_polling()
    text = message(job) if callable(message) else message
    if text:
        operator.report({"INFO"}, text)
    return {"FINISHED"}


UPLOAD_FOLDER = re.compile(r"[0-9a-f]{8}")  # the names photos.resolve_photos gives its folders


def remove_old_uploads(uploads) -> None:
    """Remove the copies of .blend images from earlier runs (none is running): only the folders the add-on
    made there (named like ``secrets.token_hex(4)``), never links or anything else someone put there."""
    for old in uploads.iterdir():
        if UPLOAD_FOLDER.fullmatch(old.name) and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


class PANST3R_OT_run(bpy.types.Operator):
    """Send the photos to the PanSt3R engine and import the result when it is done"""

    bl_idname = "panst3r.run"
    bl_label = "Run PanSt3R"
    bl_options = {"REGISTER"}

    extra_options: StringProperty(
        name="Extra Options",
        options={"HIDDEN", "SKIP_SAVE"},
        description="JSON object merged into the job options (for scripts and tests)",
    )

    @classmethod
    def poll(cls, context):
        return not runtime.manager.busy

    def _job_options(self, settings) -> dict:
        from ..client.engine import EngineError

        options = _options(settings)
        if self.extra_options:
            try:
                extra = json.loads(self.extra_options)
            except ValueError:
                extra = None
            if not isinstance(extra, dict):
                raise EngineError('extra_options must be a JSON object such as {"seed": 1}')
            options.update(extra)
        return options

    def execute(self, context):
        from ..client.engine import EngineError, is_local_url
        from ..client.jobs import RunJob
        from ..preferences import engine_settings, get_preferences, user_dir
        from .photos import PhotoError, describe_files, resolve_photos

        settings = context.scene.panst3r
        prefs = get_preferences(context)

        def make_job() -> RunJob:
            engine = engine_settings(prefs)
            if engine.mode == "REMOTE" and not is_local_url(engine.url) and not bpy.app.online_access:
                raise EngineError(
                    "online access is off, so the remote engine cannot be used; allow it in "
                    "Preferences > System > Network or use a local engine"
                )
            if settings.vocab == "CUSTOM" and not settings.vocabulary():
                raise EngineError("the custom vocabulary is empty; enter class names separated by commas")
            options = self._job_options(settings)
            uploads = user_dir("uploads")
            remove_old_uploads(uploads)
            photos = resolve_photos(settings, uploads)
            return RunJob(
                lambda: runtime.host.connect(engine),
                photos,
                options,
                user_dir("results"),
                title=f"PanSt3R ({describe_files(photos)})",
            )

        return start_task(
            self, make_job, lambda job: f"PanSt3R job started with {describe_files(job.images)}", errors=(PhotoError,)
        )


class PANST3R_OT_cancel(bpy.types.Operator):
    """Cancel the running PanSt3R task"""

    bl_idname = "panst3r.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return runtime.manager.busy

    def execute(self, context):
        runtime.manager.cancel()
        self.report({"INFO"}, "Cancelling the PanSt3R task")
        return {"FINISHED"}


classes = (PANST3R_OT_run, PANST3R_OT_cancel)
