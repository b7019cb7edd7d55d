"""The comparison's progress line: runs done/total, each running run's step, elapsed and ETA."""

from __future__ import annotations

import io

import pytest

from remask.harness import progress as progress_mod
from remask.harness.progress import ComparisonProgress, format_seconds


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 12.4, 65, 3725)] == ["0s", "12s", "1m05s", "1h02m"]


def test_line_shows_runs_steps_elapsed_and_an_eta_from_the_work_done(monkeypatch):
    clock = iter([0.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock, 100.0))
    out = io.StringIO()
    p = ComparisonProgress(4, reused=1, stream=out, budget="10 optimizer steps")
    for _ in range(3):
        p.add_work(1.0)
    p.start("d1 seed 0", weight=1.0, max_steps=10)
    p.update("d1 seed 0", {"phase": "train", "step": 5, "fraction": 0.5})
    line = p.line()
    # 0.5 of 3 runs' work in 100 s: 2.5 runs left take 500 s
    assert line == ("runs 1/4 done · d1 seed 0: step 5/10 (50% of 10 optimizer steps) · elapsed 1m40s · "
                    "ETA 8m20s")
    p.finish("d1 seed 0", "finished")
    assert p.done == 2 and p.eta() == pytest.approx(100.0 * 2 / 1)
    assert "[2/4] d1 seed 0: finished" in out.getvalue()


def test_no_eta_before_any_work():
    p = ComparisonProgress(2, stream=io.StringIO())
    p.add_work(1.0)
    assert p.eta() is None and p.line().endswith("ETA –")


def test_a_log_gets_a_progress_line_during_a_long_phase_without_steps():
    out = io.StringIO()  # not a TTY: at most one line per every_seconds
    p = ComparisonProgress(1, stream=out, every_seconds=0.05)
    p.add_work(1.0)
    p.start("big seed 0", weight=1.0, max_steps=None)
    p.update("big seed 0", {"phase": "eval", "step": 0, "fraction": 1.0})
    before = out.getvalue().count("big seed 0: evaluating")
    p.start_ticking(every=0.01)
    import time

    time.sleep(0.3)
    p.close()
    assert out.getvalue().count("big seed 0: evaluating") > before  # printed without any update
