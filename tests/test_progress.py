"""Quiet logs: bars draw only on a terminal, a piped log gets one line per bar, export prints a few lines."""

from __future__ import annotations

import io

from agq.export.equivalence import first_lines
from tqdm import tqdm

from agq.progress import LogLine, bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_bar_is_one_line_and_no_frame():
    log = io.StringIO()
    for epoch in (1, 2):
        steps = bar(range(500), desc=f"train {epoch}/2", unit="batch", stream=log, leave=False)
        assert isinstance(steps, LogLine)
        for i in steps:
            if i % 20 == 0:
                steps.set_postfix(loss=f"{1 / (i + 1):.4f}")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 2
    assert lines[0].startswith("train 1/2: 500/500 batch in ") and lines[0].endswith("(loss=0.0021)")
    assert lines[1].startswith("train 2/2: 500/500 batch in ")


def test_a_bar_updated_by_hand_writes_its_line_once_on_close():
    log = io.StringIO()
    with bar(total=3, desc="RTL simulation", unit="img", stream=log, position=1) as images:
        for _ in range(3):
            images.update()
        assert log.getvalue() == ""  # silent while it runs
    images.close()
    assert log.getvalue().startswith("RTL simulation: 3/3 img in ") and log.getvalue().count("\n") == 1


def test_a_caller_that_logs_its_own_steps_gets_no_extra_line():
    log = io.StringIO()
    for step in bar(range(3), desc="agq build", unit="step", stream=log, log_line=False):
        print(f"[{step + 1}/3] step_{step}", file=log)
    assert log.getvalue().splitlines() == ["[1/3] step_0", "[2/3] step_1", "[3/3] step_2"]


def test_on_a_terminal_it_is_tqdm_and_disabled_is_silent():
    terminal = Terminal()
    drawn = bar(range(3), desc="equality check", unit="batch", stream=terminal)
    assert isinstance(drawn, tqdm)
    list(drawn)
    assert "equality check" in terminal.getvalue()
    for stream in (Terminal(), io.StringIO()):
        list(bar(range(3), desc="quiet", stream=stream, enabled=False))
        assert stream.getvalue() == ""


def test_a_long_list_is_cut_to_its_first_lines_and_says_where_the_rest_is():
    lines = [f"image {i}: float tie" for i in range(248)]
    shown = first_lines(lines, "all in build/m/model.json", limit=3)
    assert shown == [*lines[:3], "... and 245 more (all in build/m/model.json)"]
    assert first_lines(lines[:3], "anywhere", limit=3) == lines[:3]
