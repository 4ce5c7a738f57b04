"""The HTTP API (version 1): an application factory, the routes, and JSON errors.

Views stay thin: access control is one before-request hook (``auth``), job
state lives in the :class:`JobManager`, and every failure becomes
``{"error": {"code", "message"}}`` with a fitting status.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from panst3r_engine import __version__
from panst3r_engine.devices import resolve_device
from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.pipeline.video import set_video_limits
from panst3r_engine.service import API_VERSION, auth
from panst3r_engine.service.download import zip_stream
from panst3r_engine.service.errors import ApiError, error_body, scrub
from panst3r_engine.service.executors import make_executor
from panst3r_engine.service.jobs import JobManager
from panst3r_engine.service.options import parse_options
from panst3r_engine.service.rendering import (
    check_render,
    check_splats_available,
    render_camera,
    render_limits,
)
from panst3r_engine.service.uploads import GB, reserve_disk, save_uploads
from panst3r_engine.service.videos import VideoRequest, service_limits

MB = 1 << 20
log = logging.getLogger(__name__)

DEFAULTS = {
    "TOKEN": None,  # required
    "JOBS_DIR": None,  # None: <cache root>/jobs
    "WEIGHTS": "v2",
    "DEVICE": "auto",
    "PRELOAD": False,
    "MAX_UPLOAD_MB": 4096,
    "MAX_IMAGES": 2000,
    "MAX_MEGAPIXELS": 100,  # largest photo; refused from its header at upload (and in the job)
    "MAX_VIDEO_MB": 2048,  # largest video file (and never more than MAX_UPLOAD_MB)
    "MAX_VIDEO_SECONDS": 600.0,  # longest video, from its header at upload
    "MAX_VIDEO_MEGAPIXELS": 8.9,  # largest video frame (4K, 4096x2160), from its header at upload
    "MAX_VIDEO_DECODE_S": 600.0,  # longest decoding of one video in a job
    "MAX_VIDEO_MEMORY_GB": 8.0,  # frames of one video held while the sharpest are chosen
    "KEEP_JOBS": 20,
    "JOB_TTL_HOURS": 24.0,
    "MIN_FREE_BYTES": GB,
    "RENDER_MAX_PIXELS": None,  # None: rendering.RENDER_LIMITS for the device
    "RENDER_MAX_GAUSSIANS": None,
    "RENDER_MAX_WORK": None,  # pixels x Gaussians per call (None: the CPU bound on a CPU, none on a GPU)
    "RENDER_WAIT_S": 300.0,  # longest wait of a render for the worker (a job may be running)
    "MODELS": None,  # a ModelCache to share (tests); None: a new one
    "CLUSTER": None,  # None: jobs run in this process; "ray", "auto" or "ray://HOST:PORT": on Ray workers
    "CLUSTER_CPU_WORKERS": 0,  # with CLUSTER: this many CPU workers instead of one per GPU
    "SHUTDOWN_HOOK": None,  # called after the /v1/shutdown response is sent; None: stop the jobs only
}

bp = Blueprint("v1", __name__, url_prefix="/v1")


def default_jobs_dir() -> Path:
    from panst3r_engine.config import cache_root

    return cache_root() / "jobs"


def create_app(config: dict | None = None) -> Flask:
    """Build the service on its job folder and start its worker."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.update(config or {})
    if not app.config["TOKEN"]:
        raise ValueError("the service needs a TOKEN")
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_UPLOAD_MB"] * MB)
    # Werkzeug answers 413 beyond this many parts; up to it, too many photos get the clearer 400.
    app.config["MAX_FORM_PARTS"] = 2 * int(app.config["MAX_IMAGES"]) + 64
    app.json.sort_keys = False
    from panst3r_engine.pipeline.images import set_max_pixels

    set_max_pixels(int(float(app.config["MAX_MEGAPIXELS"]) * 1_000_000))  # one engine process, one limit
    app.config["VIDEO_LIMITS"] = service_limits(app.config)
    set_video_limits(app.config["VIDEO_LIMITS"])  # the jobs decode under the limits the uploads were checked with
    jobs_dir = Path(app.config["JOBS_DIR"] or default_jobs_dir()).expanduser().resolve()
    app.config["JOBS_DIR"] = jobs_dir
    app.config["DEVICE_NAME"] = str(resolve_device(app.config["DEVICE"]))
    limits = render_limits(app.config["DEVICE_NAME"])
    app.config["RENDER_LIMITS"] = {
        "pixels": app.config["RENDER_MAX_PIXELS"] or limits["pixels"],
        "gaussians": app.config["RENDER_MAX_GAUSSIANS"] or limits["gaussians"],
        "work": app.config["RENDER_MAX_WORK"] or limits["work"],
    }
    base = JobOptions(weights=app.config["WEIGHTS"], device=app.config["DEVICE"])
    executor = make_executor(
        app.config["CLUSTER"],
        base,
        models=app.config["MODELS"],
        preload=app.config["PRELOAD"],
        cpu_workers=int(app.config["CLUSTER_CPU_WORKERS"]),
        max_pixels=int(float(app.config["MAX_MEGAPIXELS"]) * 1_000_000),
        video_limits=app.config["VIDEO_LIMITS"],
    )
    app.extensions["panst3r_jobs"] = JobManager(
        jobs_dir,
        base,
        keep_jobs=app.config["KEEP_JOBS"],
        job_ttl_hours=app.config["JOB_TTL_HOURS"],
        executor=executor,
    ).start()
    auth.install(app, app.config["TOKEN"])
    _register_errors(app)
    app.register_blueprint(bp)
    return app


def jobs() -> JobManager:
    return current_app.extensions["panst3r_jobs"]


# ---------------------------------------------------------------- routes
@bp.get("/health")
def health():
    return jsonify(
        {
            "version": __version__,
            "api_version": API_VERSION,
            "device": current_app.config["DEVICE_NAME"],
            **jobs().health(),
        }
    )


@bp.post("/jobs")
def submit_job():
    config = current_app.config
    jobs().check_accepting()
    options = parse_options(_options_text())
    files = request.files.getlist("images")
    if not files:
        others = sorted(set(request.files))
        hint = f" (files came under {', '.join(map(repr, others))})" if others else ""
        raise ApiError(
            400, "no_images", f"no photos were sent; attach them (or a video) as multipart form field 'images'{hint}"
        )
    if len(files) > config["MAX_IMAGES"]:
        raise ApiError(
            400,
            "too_many_images",
            f"{len(files)} photos are more than this engine's limit of "
            f"{config['MAX_IMAGES']}; split them into smaller jobs (or start it with --max-images)",
        )
    if options.splats:
        check_splats_available()
    with reserve_disk(config["JOBS_DIR"], request.content_length or 0, config["MIN_FREE_BYTES"]):
        values = options.values
        videos = VideoRequest(values.get("video_frames"), values.get("video_fps"), config["VIDEO_LIMITS"])
        job = jobs().submit(lambda folder: save_uploads(files, folder, videos, config["MAX_IMAGES"]), options)
    return jsonify(job), 202


def _options_text() -> str | None:
    """The ``options`` field, sent as a plain form field or as a (small) file part."""
    if "options" in request.form:
        return request.form["options"]
    part = request.files.get("options")
    return part.read(MB).decode("utf-8", "replace") if part else None


@bp.get("/jobs")
def list_jobs():
    return jsonify({"jobs": jobs().list_jobs()})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(jobs().view(job_id))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    purge = request.args.get("purge", "0").strip().lower() in ("1", "true", "yes")
    status, body = jobs().cancel(job_id, purge=purge)
    return jsonify(body), status


@bp.get("/jobs/<job_id>/bundle")
def download_bundle(job_id: str):
    folder = jobs().finished_job(job_id).bundle_dir
    if not folder.is_dir():
        raise ApiError(409, "bundle_missing", f"the bundle of job {job_id} is no longer on disk; run the job again")
    return Response(
        zip_stream(folder),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'},
    )


@bp.post("/jobs/<job_id>/render")
def render_view(job_id: str):
    bundle = jobs().finished_job(job_id).bundle_dir
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_request", "send the camera as a JSON object (Content-Type: application/json)")
    config = current_app.config
    camera = check_render(bundle, body, config["RENDER_LIMITS"])  # refusals before any wait or work
    gone = request.environ.get("waitress.client_disconnected")  # waitress: True once the client hung up
    return jsonify(jobs().run_on_worker(lambda: render_camera(bundle, camera), float(config["RENDER_WAIT_S"]), gone))


@bp.post("/shutdown")
def shutdown():
    """Answer first, then stop: the hook runs once this response has been sent."""
    manager = jobs()
    manager.stop_accepting()
    hook = current_app.config["SHUTDOWN_HOOK"] or (lambda: manager.shutdown())
    response = jsonify({"state": "shutting_down"})
    response.call_on_close(lambda: threading.Thread(target=hook, name="panst3r-shutdown", daemon=True).start())
    return response, 202


# ---------------------------------------------------------------- errors
def _register_errors(app: Flask) -> None:
    def _private(text: str) -> str:  # remote clients never see this machine's folders
        return scrub(text, current_app.config["JOBS_DIR"])

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(error_body(exc.code, _private(exc.message))), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            return jsonify(error_body("too_large", _too_large_message())), 413
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(code, _private(exc.description or exc.name))), status

    def _too_large_message() -> str:
        config = current_app.config
        if (request.content_length or 0) > config["MAX_CONTENT_LENGTH"]:
            return (
                f"the upload is larger than this engine's limit of {config['MAX_UPLOAD_MB']} MB; send fewer or "
                "smaller photos (or start the engine with a larger --max-upload-mb)"
            )
        return (
            f"the request has too many parts or too large a form field; send at most {config['MAX_IMAGES']} "
            "photos and keep the options under 500 kB"
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.path)
        return jsonify(
            error_body(
                "internal",
                _private(f"the engine failed unexpectedly ({type(exc).__name__}: {exc}); see its log for details"),
            )
        ), 500
