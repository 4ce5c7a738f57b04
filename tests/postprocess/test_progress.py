"""Progress and cancellation inside the post-processing loops.

``postprocess(..., progress=p)`` calls ``p("postprocess", fraction, message)`` from inside the
weights, solver, decoding and standard per-view loops, so a ``Progress`` whose cancel event is set
stops the run with ``Cancelled`` shortly after (instead of at the end of the stage). The timing
bounds are relative to the uncancelled duration measured in the same test, so a slow machine
scales both.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks.bench_qubo import make_inputs
from panst3r_engine.errors import Cancelled
from panst3r_engine.pipeline.progress import Progress
from panst3r_engine.postprocess import QuboConfig, postprocess
from panst3r_engine.postprocess.common import Checkpoints
from panst3r_engine.postprocess.qubo_solver import solve_qubo
from tests.postprocess.test_qubo import random_qubo

# (make_inputs arguments: seed, queries, views, height, width), extra postprocess arguments.
# Each takes about 1-3 s uncancelled on one CPU core; the first is bench_qubo.py's default size.
SLOW_CASES = {
    "qubo_bench_size": ((0, 200, 10, 384, 512), dict(method="qubo")),  # fast weights (tau auto)
    "qubo_exact_weights": ((1, 100, 3, 192, 256), dict(method="qubo", qubo=QuboConfig(tau=0.0))),
    "standard_v2": ((0, 200, 4, 192, 256), dict(method="standard_v2")),
}


class Recorder:
    """A progress callable that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.calls.append((stage, fraction, message))


def same_result(a, b) -> bool:
    return (
        len(a.pan) == len(b.pan)
        and all(np.array_equal(x, y) for x, y in zip(a.pan, b.pan))
        and all(np.array_equal(x, y) for x, y in zip(a.conf, b.conf))
        and a.segments == b.segments
        and a.info == b.info
    )


def time_to_cancel(run, delay: float) -> float:
    """Call ``run(progress)`` with a Progress whose cancel event a thread sets after ``delay`` s;
    assert it raises Cancelled; -> seconds from setting the event to the exception."""
    event, set_at = threading.Event(), []

    def cancel() -> None:
        time.sleep(delay)
        set_at.append(time.perf_counter())
        event.set()

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        with pytest.raises(Cancelled):
            run(Progress(cancel_event=event))
        stopped = time.perf_counter()
    finally:
        thread.join()
    return stopped - set_at[0]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_cancel_event_stops_postprocess_promptly(case):
    args, kw = SLOW_CASES[case]
    logits, masks, shapes = make_inputs(*args)
    _, t_full = timed(lambda: postprocess(logits, masks, shapes, **kw))
    # the event is set early (at most 1/5 of the way), so an unchecked run would go on for >= 0.8 t_full
    latency = time_to_cancel(lambda p: postprocess(logits, masks, shapes, progress=p, **kw), min(0.2, t_full / 5))
    # checkpoints come every few % of the run (plus a 50 ms throttle): stopping within 30 % is generous
    assert latency < 0.3 * t_full + 0.1, (case, latency, t_full)


def test_cancel_event_stops_the_qubo_solver_promptly():
    # one dense component of 1000 variables: local search from 35 starts, about 2 s on one core
    a = random_qubo(np.random.default_rng(0), 1000, "general")
    x_ref, t_full = timed(lambda: solve_qubo(a))
    latency = time_to_cancel(lambda p: solve_qubo(a, ck=Checkpoints(p)), min(0.2, t_full / 5))
    assert latency < 0.3 * t_full + 0.1, (latency, t_full)
    rec = Recorder()
    assert np.array_equal(solve_qubo(a, ck=Checkpoints(rec)), x_ref)  # checkpoints change nothing
    assert any("local search" in m for _, _, m in rec.calls)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="qubo", qubo=QuboConfig(tau=0.0)),
        dict(method="qubo", qubo=QuboConfig(tau=1e-3)),
        dict(method="standard_v1"),
        dict(method="standard_v2"),
    ],
    ids=["qubo_exact", "qubo_fast", "v1", "v2"],
)
def test_progress_reports_without_changing_the_result(kw):
    logits, masks, shapes = make_inputs(2, 60, 3, 96, 128)
    plain = postprocess(logits, masks, shapes, **kw)
    rec = Recorder()
    reported = postprocess(logits, masks, shapes, progress=rec, **kw)
    assert same_result(plain, reported) and len(plain.segments) > 0
    stages, fractions, messages = zip(*rec.calls)
    assert set(stages) == {"postprocess"}
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), fractions
    assert messages[-1] == f"{len(plain.segments)} segments"
    # a Progress without a cancel event is an ordinary callable too
    assert same_result(plain, postprocess(logits, masks, shapes, progress=Progress(), **kw))


def test_checkpoints_map_sub_ranges_throttle_and_never_go_back():
    rec = Recorder()
    ck = Checkpoints(rec, interval=0.0)
    inner = ck.part(0.2, 1.0).part(0.5, 1.0)  # [0, 1] -> [0.6, 1.0] of the whole
    inner.tick(0.5, "a")  # 0.2 + 0.8 * (0.5 + 0.5 * 0.5) = 0.8
    ck.part(0.0, 0.2).tick(1.0, "b")  # 0.2 < 0.8 already reported: stays 0.8
    inner.tick(2.0, "c")  # clipped to the end of the range: 1.0
    assert rec.calls == [
        ("postprocess", pytest.approx(0.8), "a"),
        ("postprocess", pytest.approx(0.8), "b"),
        ("postprocess", 1.0, "c"),
    ]
    rec = Recorder()
    slow = Checkpoints(rec, interval=3600.0)
    slow.tick(0.1, "first")  # the first tick always reports
    slow.tick(0.5, "throttled")  # within the interval: skipped
    slow.tick(0.9, "forced", force=True)
    assert [m for _, _, m in rec.calls] == ["first", "forced"]
    Checkpoints().part(0.0, 0.5).tick(0.3, "nobody listens")  # no callable: nothing happens
