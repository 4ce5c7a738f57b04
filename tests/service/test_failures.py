"""A failed job's error: a stable code and the pipeline's own sentence, never a traceback."""

from __future__ import annotations

import pytest
import torch

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.errors import OptionsError
from panst3r_engine.model.checkpoints import CheckpointError
from panst3r_engine.pipeline.images import ImageError
from panst3r_engine.pipeline.memory import InsufficientMemory
from panst3r_engine.service.errors import ApiError
from panst3r_engine.service.failures import describe_failure
from panst3r_engine.vocab.vocabularies import VocabularyError
from panst3r_engine.weights.registry import WeightsError


@pytest.mark.parametrize(
    "exc, code",
    [
        (ImageError("a.jpg: not a readable image"), "bad_image"),
        (VocabularyError("duplicate class name"), "bad_vocab"),
        (BundleError("cannot write"), "bundle"),
        (CheckpointError("bad keys"), "weights"),
        (WeightsError("weights 'panst3r-v2-512' are not in the cache"), "weights"),
        (InsufficientMemory("needs 30 GB; use --keyframes 8"), "out_of_memory"),
        (OptionsError("keyframes must be at least 1"), "bad_options"),
        (ApiError(501, "splats_unavailable", "no gsplat"), "splats_unavailable"),
    ],
)
def test_known_failures_keep_their_sentence(exc, code):
    assert describe_failure(exc) == {"code": code, "message": str(exc)}


def test_gpu_out_of_memory_says_what_to_do():
    error = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert error["code"] == "out_of_memory" and "fewer keyframes" in error["message"]


def test_unexpected_failures_point_to_the_log():
    error = describe_failure(KeyError("pred_masks"))
    assert error["code"] == "internal" and "KeyError" in error["message"] and "log" in error["message"]


def test_a_bug_is_not_reported_as_bad_options():
    """A ValueError from a programming mistake is internal (logged with its traceback), not the user's fault."""
    error = describe_failure(ValueError("operands could not be broadcast together"))
    assert error["code"] == "internal"
