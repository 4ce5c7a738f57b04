"""The panel's job settings have the engine's defaults and limits (0 standing for the engine's None: Auto)."""

from __future__ import annotations

import pytest

from panst3r_engine.pipeline.options import POSTPROCESS_METHODS, JobOptions, option_fields

SHARED = ("keyframes", "video_frames", "video_fps", "postprocess", "conf_threshold", "splats", "splat_steps")
NO_LIMIT = 1e30  # Blender's unbounded float limit is FLT_MAX (about 3.4e38)


@pytest.fixture
def props(addon):
    return addon.module("settings").PanSt3RSettings.bl_rna.properties


@pytest.mark.parametrize("name", [n for n in SHARED if n != "postprocess"])
def test_defaults_and_limits_equal_the_engine(props, name):
    f, prop = option_fields()[name], props[name]
    auto = f.default is None
    assert prop.default == (0 if auto else f.default)
    if f.metadata["type"] is bool:
        return
    low, high = f.metadata["min"], f.metadata["max"]
    assert prop.hard_min == (0 if auto else low)
    assert (prop.hard_max == high) if high is not None else (prop.hard_max >= NO_LIMIT)
    if auto:
        assert "0 = Auto" in prop.description


def test_postprocess_choices_equal_the_engine(props):
    items = [item.identifier for item in props["postprocess"].enum_items]
    assert items == ["AUTO", *POSTPROCESS_METHODS] and props["postprocess"].default == "AUTO"


def test_panel_options_at_the_limits_are_valid_engine_options(addon, scene):
    settings, run = scene.panst3r, addon.module("operators.run")
    settings.splats = True
    settings.photos.add().path = "/videos/walk.mp4"  # the video options are sent only with a movie in the list
    assert not {"keyframes", "splat_steps", "video_frames", "video_fps"} & set(run._options(settings))
    assert JobOptions(**run._options(settings)).validate().splat_steps is None
    for name in ("keyframes", "splat_steps", "conf_threshold", "video_frames", "video_fps"):
        prop = settings.bl_rna.properties[name]
        for value in (prop.hard_min, min(prop.hard_max, 1e6)):
            setattr(settings, name, value)
            JobOptions(**run._options(settings)).validate()
    settings.keyframes, settings.splat_steps = 10**9, 10**9  # Blender clamps to the hard limits
    options = JobOptions(**run._options(settings)).validate()
    assert (options.keyframes, options.splat_steps) == (
        option_fields()["keyframes"].metadata["max"],
        option_fields()["splat_steps"].metadata["max"],
    )
