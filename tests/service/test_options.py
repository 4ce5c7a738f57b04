"""Client job options: each problem refused with one sentence naming it; never a path."""

from __future__ import annotations

import json

import pytest

from panst3r_engine.pipeline.options import JobOptions
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.options import FIELDS, parse_options, vocab_file_text


def refused(options) -> str:
    text = options if isinstance(options, str) else json.dumps(options)
    with pytest.raises(ApiError) as info:
        parse_options(text)
    assert info.value.status == 400 and info.value.code == "bad_options"
    return info.value.message


def test_no_options_means_defaults():
    for text in (None, "", "  ", "{}"):
        assert parse_options(text).values == {}
    base = JobOptions(weights="w.pth", device="cpu")
    assert parse_options(None).job_options(base) == base


def test_all_options_reach_the_pipeline():
    options = parse_options(
        json.dumps(
            {
                "keyframes": 4,
                "postprocess": "qubo",
                "vocab": "ScanNet",
                "vocab_embeddings": "random",
                "conf_threshold": 2,
                "max_batch": 2,
                "seed": 7,
                "save_raw": True,
                "splats": True,
                "splat_steps": 300,
            }
        )
    )
    job = options.job_options(JobOptions(weights="w.pth", device="cpu"))
    assert (job.weights, job.device, job.keyframes, job.postprocess, job.vocab) == (
        "w.pth",
        "cpu",
        4,
        "qubo",
        "scannetpp",
    )
    assert (job.vocab_embeddings, job.conf_threshold, job.max_batch, job.seed, job.save_raw) == (
        "random",
        2.0,
        2,
        7,
        True,
    )
    assert options.splats and options.splat_steps == 300


def test_video_sampling_reaches_the_pipeline():
    job = parse_options('{"video_frames": 12, "video_fps": 2}').job_options(JobOptions())
    assert (job.video_frames, job.video_fps) == (12, 2.0) and isinstance(job.video_fps, float)


def test_null_means_default():
    assert parse_options('{"keyframes": null}').values == {}


def test_zero_keyframes_means_auto():
    assert parse_options('{"keyframes": 0}').job_options(JobOptions()).keyframes is None


def test_accepted_keys_are_the_client_fields():
    assert FIELDS == (
        "keyframes",
        "keyframes_by",
        "video_frames",
        "video_fps",
        "postprocess",
        "vocab",
        "vocab_embeddings",
        "conf_threshold",
        "max_batch",
        "seed",
        "save_raw",
        "splats",
        "splat_steps",
    )


def test_own_classes_become_a_job_file():
    options = parse_options(json.dumps({"vocab": [" wall", "floor;stuff", "chair"]}))
    assert options.vocab_names == ("wall", "floor;stuff", "chair")
    assert vocab_file_text(options.vocab_names) == "wall\nfloor;stuff\nchair\n"
    assert options.job_options(JobOptions(), "/jobs/x/vocab.txt").vocab == "/jobs/x/vocab.txt"


def test_unknown_option_is_named():
    assert "'keyframe'" in refused({"keyframe": 3})
    assert "'weights'" in refused({"weights": "/etc/passwd"})  # the engine's choice, not the client's
    assert "'device'" in refused({"device": None})


@pytest.mark.parametrize(
    "options, words",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"keyframes": "5"}, "'keyframes' must be an integer"),
        ({"keyframes": 2.5}, "'keyframes' must be an integer"),
        ({"keyframes": True}, "'keyframes' must be an integer"),
        ({"keyframes": -1}, "'keyframes' must be an integer from 0 to 10000, got -1"),
        ({"keyframes": 10**30}, "'keyframes' must be an integer from 0 to 10000"),
        ({"max_batch": 1000}, "'max_batch' must be an integer from 1 to 64, got 1000"),
        ({"max_batch": 0}, "'max_batch' must be an integer from 1 to 64, got 0"),
        ({"seed": 2**32}, "'seed' must be an integer from 0 to 4294967295"),
        ({"seed": -1}, "'seed' must be an integer from 0 to 4294967295"),
        ('{"conf_threshold": NaN}', "'conf_threshold' must be a number >= 1, got NaN"),
        ('{"conf_threshold": Infinity}', "'conf_threshold' must be a number >= 1, got Infinity"),
        ({"conf_threshold": "3"}, "'conf_threshold' must be a number >= 1"),
        ({"splats": True, "splat_steps": 0}, "'splat_steps' must be an integer from 1 to 100000, got 0"),
        ({"splats": True, "splat_steps": 100001}, "'splat_steps' must be an integer from 1 to 100000"),
        ({"save_raw": 1}, "'save_raw' must be true or false"),
        ({"postprocess": "magic"}, "standard_v1, standard_v2, qubo"),
        ({"conf_threshold": 0.5}, "'conf_threshold' must be a number >= 1, got 0.5"),
        ({"vocab_embeddings": "/tmp/emb.npz"}, "only 'random'"),
        ({"vocab": "/etc/passwd"}, "not a preset"),
        ({"vocab": "classes.txt"}, "not a preset"),
        ({"vocab": []}, "empty"),
        ({"vocab": ["wall", "wall"]}, "duplicate class name 'wall'"),
        ({"vocab": ["wall", 3]}, "entry 1"),
        ({"vocab": ["wall # comment"]}, "'#'"),
        ({"vocab": ["two\nlines"]}, "line break"),
        ({"splat_steps": 100}, 'needs "splats": true'),
        ({"video_frames": 0}, "'video_frames' must be an integer from 1 to 2000, got 0"),
        ({"video_fps": 500}, "'video_fps' must be a number from 0.01 to 120, got 500"),
    ],
)
def test_bad_options_are_refused_with_a_reason(options, words):
    assert words in refused(options)


@pytest.mark.parametrize(
    "text", ['{"seed": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000, '{"vocab": "' + "x" * (2 << 20) + '"}']
)
def test_hostile_option_texts_are_400_not_500(text):
    with pytest.raises(ApiError) as info:
        parse_options(text)
    assert info.value.status == 400 and info.value.code == "bad_options"
