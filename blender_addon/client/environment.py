"""The engine environment: a venv in the extension's user folder with the bundled engine and torch. No bpy.

The extension zip carries the engine source under ``engine/`` (built by
build.py). pip would write build files next to the source, so the source is
copied to a temporary folder first: nothing is ever written into the add-on's
own folder. The steps run as a :class:`~.jobs.CommandJob`, so the panel shows
their progress like any other job.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from .engine import EngineError
from .jobs import Step

TORCH_INDEXES = {  # preference value -> pip index URL ('' = PyPI's default build)
    "DEFAULT": "",
    "CPU": "https://download.pytorch.org/whl/cpu",
    "CU128": "https://download.pytorch.org/whl/cu128",
}


def env_python(env_dir: Path) -> Path:
    """The interpreter inside a venv folder."""
    env_dir = Path(env_dir)
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def find_engine_source(addon_dir: Path) -> Path | None:
    """The engine source bundled in the extension (``engine/``), or the checkout beside a development copy."""
    for candidate in (Path(addon_dir) / "engine", Path(addon_dir).parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "panst3r_engine" / "__init__.py").is_file():
            return candidate
    return None


def _stage_source(source: Path, staging: Path) -> None:
    """Copy the engine source (package + pyproject + licence + readme) where pip may write build files."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)  # a fresh private temporary folder per setup
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    shutil.copytree(source / "panst3r_engine", staging / "panst3r_engine", ignore=ignore)
    for name in ("pyproject.toml", "LICENSE", "README.md"):
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    if not (staging / "README.md").is_file():
        (staging / "README.md").write_text("PanSt3R engine\n", encoding="utf-8")


def environment_steps(
    env_dir: Path, engine_source: Path | None, torch_variant: str = "DEFAULT", base_python: str | None = None
) -> list[Step]:
    """Steps that create the venv and install torch and the engine into it.

    Args:
        env_dir: the venv folder (``extension_path_user(__package__, path="engine-env")``).
        engine_source: folder with ``pyproject.toml`` and ``panst3r_engine/``.
        torch_variant: a key of :data:`TORCH_INDEXES`.
        base_python: interpreter that creates the venv (default: the one running, Blender's own Python).
    """
    if engine_source is None:
        raise EngineError(
            "this copy of the add-on does not contain the engine source (engine/); install the "
            "zip made by build.py, or point the preferences at a Python that has the engine"
        )
    if torch_variant not in TORCH_INDEXES:
        raise EngineError(f"unknown torch variant {torch_variant!r}; choose one of {', '.join(TORCH_INDEXES)}")
    python = str(env_python(env_dir))
    staging = Path(tempfile.mkdtemp(prefix="panst3r-engine-source-")) / "engine"
    torch = [python, "-m", "pip", "install", "--progress-bar", "off", "torch"]
    if TORCH_INDEXES[torch_variant]:
        torch += ["--index-url", TORCH_INDEXES[torch_variant]]
    return [
        Step("creating the environment", [base_python or sys.executable, "-m", "venv", str(env_dir)]),
        Step("updating pip", [python, "-m", "pip", "install", "--progress-bar", "off", "--upgrade", "pip"]),
        Step("installing torch", torch),
        Step("copying the engine source", func=lambda: _stage_source(Path(engine_source), staging)),
        Step(  # text: the SigLIP text tower; video: PyAV, for movies in the photo list
            "installing the engine", [python, "-m", "pip", "install", "--progress-bar", "off", f"{staging}[text,video]"]
        ),
        Step("checking the engine", [python, "-m", "panst3r_engine", "--version"]),
    ]


def weights_steps(engine_python: str, weights_ids: list[str], cache_dir: str = "") -> list[Step]:
    """Steps that download weights with the engine's own downloader (licence accepted by the user)."""
    if not Path(engine_python).is_file():
        raise EngineError(f"the engine's Python {engine_python!r} does not exist; create the engine environment first")
    env = {"PANST3R_HOME": cache_dir} if cache_dir else {}
    return [
        Step(
            f"downloading {wid}",
            [engine_python, "-m", "panst3r_engine", "weights", "download", wid, "--accept-license"],
            env=env,
        )
        for wid in weights_ids
    ]
