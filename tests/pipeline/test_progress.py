"""What people see of a job's progress: a bar redrawn in place on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from panst3r_engine.pipeline.progress import TextProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(text: str) -> list[str]:
    """What a terminal shows: each ``\\r`` returns to the start of the line and overwrites what is there."""
    lines, current, col = [], [], 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(current))
            current, col = [], 0
        else:
            current[col : col + 1] = [ch]
            col += 1
    return [*lines, "".join(current)] if current else lines


def test_terminal_line_leaves_no_stale_characters():
    now = [0.0]
    stream = Terminal()
    progress = TextProgress(stream, clock=lambda: now[0])
    progress("load_model", 0.2, "reading panst3r_v2_512_5ds.pth from the cache")
    now[0] = 1.0
    progress("load_model", 1.0, "v2")
    screen = [line.rstrip() for line in _screen(stream.getvalue())]  # trailing blanks are invisible
    assert screen == ["load_model        [########################] 100.0% v2"]


def test_terminal_bar_is_throttled_and_ends_each_stage_on_its_own_line():
    now = [0.0]
    stream = Terminal()
    progress = TextProgress(stream, rate=8.0, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.01  # 100 updates in one second
        progress("encode", i / 100)
    progress("encode", 1.0)
    progress("encode", 1.0)  # reported twice: drawn once
    progress("decode", 1.0)
    text = stream.getvalue()
    assert text.count("\r") <= 10 and text.count("\n") == 2
    assert [line.split()[0] for line in _screen(text)] == ["encode", "decode"]


def test_without_a_terminal_plain_lines_every_few_seconds_during_a_long_stage():
    now = [0.0]
    stream = io.StringIO()
    progress = TextProgress(stream, log_interval=5.0, clock=lambda: now[0])
    progress("load_model", 1.0, "v2")
    for step in range(1, 301):  # a 60 s fit, one update every 0.2 s
        now[0] = step * 0.2
        progress("fit_splats", step / 300, f"step {step}/300")
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "[" not in text
    assert lines[0] == "load_model        100.0% v2"
    fit = [line for line in lines if line.startswith("fit_splats")]
    assert 10 <= len(fit) <= 13  # one line per 5 s, plus the last
    assert fit[0] == "fit_splats          8.3% step 25/300" and fit[-1] == "fit_splats        100.0% step 300/300"
