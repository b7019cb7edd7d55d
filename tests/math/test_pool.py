"""The math-verify worker pool: deadline, kill and respawn, memory cap, clean shutdown, no leaks."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from remask.testing import HOSTILE_COMPLETIONS
from remask_math.pool import Job, VerifierPool
from remask_math.rewards import MathCorrect
from remask_math.verifier import MathVerifier, Policy

# math-verify issue #65: a C-level big-integer power that SIGALRM cannot interrupt
HANG = "\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}"


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().split(")")[-1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                out.add(int(entry))
    return out


def test_lazy_start_then_clean_close():
    before = _children()
    pool = VerifierPool(workers=2, timeout_s=10, memory_mb=1536)
    assert pool.pids == [] and _children() == before  # constructing spawns nothing
    assert pool.run([Job("1", "1"), Job("2", "3")]) == [(True, "correct"), (False, "wrong-answer")]
    pids = pool.pids
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    for pid in pids:  # the address space of every worker is capped
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max address space"))
        assert str(1536 * 1024 * 1024) in line
    pool.close()
    pool.close()  # idempotent
    assert not any(_alive(p) for p in pids)
    assert _children() == before
    with pytest.raises(RuntimeError, match="closed"):
        pool.run([Job("1", "1")])


def test_hanging_verification_is_killed_and_respawned():
    pool = VerifierPool(workers=1, timeout_s=1.5)
    try:
        pool.start()
        assert pool.run([Job("1", "1")]) == [(True, "correct")]
        first = pool.pids[0]
        t0 = time.monotonic()
        out = pool.run([Job("1", HANG), Job("2", "2")])
        elapsed = time.monotonic() - t0
        assert out == [(False, "timeout"), (True, "correct")]
        assert elapsed < 15, elapsed  # deadline + a respawn, not the 40+ s hang
        assert not _alive(first)  # the hung worker was killed and reaped
        assert pool.pids[0] != first and _alive(pool.pids[0])
        assert pool.stats["timeouts"] == 1 and pool.stats["respawns"] == 1
    finally:
        pool.close()


def test_worker_killed_from_outside_is_replaced():
    pool = VerifierPool(workers=1, timeout_s=10)
    try:
        assert pool.run([Job("1", "1")]) == [(True, "correct")]
        os.kill(pool.pids[0], signal.SIGKILL)
        time.sleep(0.1)
        box = {}
        # from a non-main thread too: the parent uses no signals (math-verify's SIGALRM would fail here)
        worker = threading.Thread(target=lambda: box.update(out=pool.run([Job("1", "1"), Job("5", "5")])))
        worker.start()
        worker.join(60)
        out = box["out"]
        assert out[1] == (True, "correct")
        assert out[0] in ((True, "correct"), (False, "verifier-crashed"))
    finally:
        pool.close()


def test_reward_timeout_reason_and_close_leaves_nothing():
    before = _children()
    reward = MathCorrect(MathCorrect.Config(workers=1, timeout_s=1.5))
    reward.verifier.policy = Policy(max_exponent_depth=0)  # let the hang reach the worker
    out = reward.score(prompts=["", ""], completions=[f"\\boxed{{{HANG}}}", "\\boxed{\\sqrt{4}}"],
                       references=[{"answer": "1"}, {"answer": "2"}])
    assert out.reasons["math-correct"] == ("timeout", "correct")
    assert out.total.tolist() == [0.0, 1.0]
    # the same rows again: the verdict is remembered, the timeout is not (it is retried)
    pool = reward.verifier.pool
    jobs, timeouts = pool.stats["jobs"], pool.stats["timeouts"]
    assert jobs == 1  # \sqrt{4} needed math-verify
    again = reward.score(prompts=["", ""], completions=[f"\\boxed{{{HANG}}}", "\\boxed{\\sqrt{4}}"],
                         references=[{"answer": "1"}, {"answer": "2"}])
    assert again.reasons["math-correct"] == ("timeout", "correct")
    assert pool.stats["jobs"] == jobs and pool.stats["timeouts"] == timeouts + 1
    reward.close()
    assert _children() == before


def test_hostile_outputs_through_the_pool():
    verifier = MathVerifier(workers=2, timeout_s=3)
    try:
        extra = ["\\boxed{\\frac{1}{0}}", "\\boxed{10^{10^{7}}}", "\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}",
                 "\\boxed{\\begin{pmatrix}1&2\\end{pmatrix}}", "\\boxed{\\x00}", "\\boxed{$$}", "\\boxed{\\\\}"]
        from remask_math.text import final_answer_span
        spans = [final_answer_span(t)[0] for t in list(HOSTILE_COMPLETIONS) + extra]
        out = verifier.check([("1", s) for s in spans])
        assert len(out) == len(spans)
        assert all(v in (0.0, 1.0) for v, _ in out)
        assert out[-7][0] == 0.0
        reasons = dict(zip(spans, (r for _, r in out)))
        assert reasons["9**9**9**9"] == "exponent-tower"
        assert reasons["(" * 400 + "1" + ")" * 400] == "too-deep"
    finally:
        verifier.close()


_SCRIPT = """
import sys, time
from remask_math.pool import Job, VerifierPool
pool = VerifierPool(workers=2)
pool.run([Job("1", "1")])
print(" ".join(map(str, pool.pids)), flush=True)
if sys.argv[1] == "hang":
    time.sleep(60)
"""


def test_workers_die_with_a_killed_parent():
    """No close(), no atexit: a SIGKILLed trainer still takes its workers with it (PDEATHSIG)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, "hang"],
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
