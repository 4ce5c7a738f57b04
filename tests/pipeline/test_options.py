"""JobOptions' field metadata is the one declaration: the CLI flags, validate() and the service checks follow it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from panst3r_engine.cli import build_parser, main
from panst3r_engine.errors import OptionsError
from panst3r_engine.pipeline.options import JobOptions, option_fields
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.options import FIELDS, parse_options

REPO = Path(__file__).resolve().parents[2]


def run_parser() -> dict:
    """The ``run`` subcommand's actions by destination."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["run"]._actions}


def out_of_range(meta) -> list:
    """Values just outside a field's declared bounds (and non-finite ones for numbers)."""
    step = 0.5 if meta["type"] is float else 1
    bad = [meta["min"] - step] if meta["min"] is not None else []
    bad += [meta["max"] + step] if meta["max"] is not None else []
    return bad + ([math.nan, math.inf] if meta["type"] is float else [])


def service_refusal(name: str, value) -> str:
    sent = {name: value, **({"splats": True} if name == "splat_steps" else {})}
    with pytest.raises(ApiError) as info:
        parse_options(json.dumps(sent))
    assert info.value.status == 400 and info.value.code == "bad_options"
    return info.value.message


def test_every_field_has_a_run_flag_with_its_default_and_help():
    actions = run_parser()
    for name, f in option_fields().items():
        action = actions[name]
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.default == f.default and action.help == f.metadata["help"]
        assert list(action.choices or []) == list(f.metadata["choices"] or [])
    args = build_parser().parse_args(["run", "a.jpg", "--out", "b"])
    assert JobOptions(**{f.name: getattr(args, f.name) for f in fields(JobOptions)}) == JobOptions()


def test_flags_reach_the_options():
    args = build_parser().parse_args(
        [
            "run",
            "a.jpg",
            "--out",
            "b",
            "--keyframes",
            "7",
            "--conf-threshold",
            "2.5",
            "--max-batch",
            "4",
            "--seed",
            "9",
            "--splats",
            "--splat-steps",
            "50",
            "--resize",
            "none",
            "--postprocess",
            "qubo",
            "--amp",
        ]
    )
    options = JobOptions(**{f.name: getattr(args, f.name) for f in fields(JobOptions)}).validate()
    assert (options.keyframes, options.conf_threshold, options.max_batch, options.seed) == (7, 2.5, 4, 9)
    assert (options.splats, options.splat_steps, options.resize, options.postprocess, options.amp) == (
        True,
        50,
        "none",
        "qubo",
        True,
    )


def test_service_accepts_exactly_the_client_fields():
    assert set(FIELDS) == {n for n, f in option_fields().items() if f.metadata["client"]}
    for name, f in option_fields().items():
        if not f.metadata["client"]:
            assert "unknown option" in service_refusal(name, f.default if f.default is not None else "x")


@pytest.mark.parametrize(
    "name", [n for n, f in option_fields().items() if f.metadata["min"] is not None or f.metadata["max"] is not None]
)
def test_out_of_range_is_refused_identically_by_cli_and_service(name, capsys):
    meta = option_fields()[name].metadata
    for value in out_of_range(meta):
        with pytest.raises(OptionsError) as info:
            JobOptions(**{name: value, "splats": True}).validate()
        capsys.readouterr()
        flags = ["--" + name.replace("_", "-"), str(value), *(["--splats"] if name == "splat_steps" else [])]
        assert main(["run", "missing.jpg", "--out", "x", *flags]) == 2
        err = capsys.readouterr().err
        if meta["client"]:
            assert service_refusal(name, value) == info.value.message
        assert f"error: {info.value.message}\n" in err


@pytest.mark.parametrize("name", [n for n, f in option_fields().items() if f.metadata["choices"]])
def test_unknown_choices_are_refused_by_cli_validate_and_service(name, capsys):
    assert main(["run", "missing.jpg", "--out", "x", "--" + name.replace("_", "-"), "magic"]) == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err
    with pytest.raises(OptionsError, match="must be one of"):
        JobOptions(**{name: "magic"}).validate()
    if option_fields()[name].metadata["client"]:
        assert "must be one of" in service_refusal(name, "magic")


@pytest.mark.parametrize(
    "name, value",
    [
        ("keyframes", True),
        ("keyframes", 2.0),
        ("seed", "1"),
        ("save_raw", 1),
        ("conf_threshold", -math.inf),
        ("conf_threshold", False),
        ("weights", None),
        ("splat_steps", 0),
        ("seed", 2**32),
        ("max_batch", 65),
    ],
)
def test_validate_refuses_wrong_types_and_bounds(name, value):
    with pytest.raises(OptionsError, match=f"option '{name}' must be"):
        JobOptions(**{name: value, "splats": True}).validate()


def test_splat_steps_without_splats_is_refused_not_ignored(capsys):
    assert main(["run", "missing.jpg", "--out", "x", "--splat-steps", "500"]) == 2
    assert "option 'splat_steps' needs splats; add --splats" in capsys.readouterr().err
    assert JobOptions(splats=True, splat_steps=500).validate().splat_steps == 500


def test_defaults_validate_and_zero_keyframes_mean_auto():
    assert JobOptions().validate() == JobOptions()
    assert JobOptions().splat_steps is None and JobOptions().keyframes is None
    assert JobOptions(keyframes=0).validate().keyframes is None
    top = JobOptions(keyframes=10_000, splats=True, splat_steps=100_000, seed=2**32 - 1, max_batch=64)
    assert top.validate() == top
    assert parse_options('{"keyframes": 0}').job_options(JobOptions()).keyframes is None


NO_TORCH = """
import json, sys
from panst3r_engine.cli import main
codes = [main(args) for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
"""


def test_bad_arguments_fail_fast_without_torch(tmp_path):
    photo, empty = tmp_path / "a.jpg", tmp_path / "empty"
    photo.write_bytes(b"not checked: the options fail first")
    empty.mkdir()
    cases = [
        ["run", str(tmp_path / "missing.jpg"), "--out", "x"],
        ["run", str(empty), "--out", "x"],
        ["run", str(photo), "/dev/null", "--out", "x"],
        ["run", str(photo), "--out", "x", "--keyframes", "many"],
        ["run", str(photo), "--out", "x", "--max-batch", "0"],
        ["run", str(photo), "--out", "x", "--resize", "256"],
        ["run", str(photo), "--out", "x", "--no-such-flag"],
        ["run", "--out", "x"],
        ["postprocess", str(tmp_path / "raw.npz"), "--method", "magic", "--out", "x"],
        ["postprocess", str(tmp_path / "raw.npz"), "--seed", "-1", "--out", "x"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, json.dumps(cases)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"codes": [2] * len(cases), "torch": False}
    assert "missing.jpg: no such file or folder; check the photo path" in result.stderr
    assert "empty: no images in this folder" in result.stderr
    assert "/dev/null: not a regular file" in result.stderr
    assert "option 'max_batch' must be an integer from 1 to 64, got 0" in result.stderr
    assert "option 'seed' must be an integer from 0 to 4294967295, got -1" in result.stderr
