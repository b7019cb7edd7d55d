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

# math-verify issue #65: a C-level big-integer power that SIGALRM cannot interrupt (the worker's
# size bound now refuses it before evaluation)
HANG = "\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}"
# math-verify needs several seconds for this one; without its alarm only the hard kill stops it
GAUSS = ("\\sqrt{\\pi}", "\\int_{-\\infty}^{\\infty} e^{-x^2} dx")


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
        out = pool.run([Job(*GAUSS), Job("2", "2")])  # no alarm in the policy: only the kill stops it
        elapsed = time.monotonic() - t0
        assert out == [(False, "timeout"), (True, "correct")]
        assert elapsed < 15, elapsed  # deadline + a respawn, not the full computation
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
    slow = f"\\boxed{{{GAUSS[1]}}}"
    out = reward.score(prompts=["", ""], completions=[slow, "\\boxed{\\log_2 8}"],
                       references=[{"answer": GAUSS[0]}, {"answer": "3"}])
    assert out.reasons["math-correct"] == ("timeout", "correct")
    assert out.total.tolist() == [0.0, 1.0]
    # the same rows again: the verdict is remembered, the timeout is not (it is retried)
    pool = reward.verifier.pool
    jobs, timeouts = pool.stats["jobs"], pool.stats["timeouts"]
    assert jobs == 1  # the logarithm needed math-verify
    again = reward.score(prompts=["", ""], completions=[slow, "\\boxed{\\log_2 8}"],
                         references=[{"answer": GAUSS[0]}, {"answer": "3"}])
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



def test_math_verify_alarm_is_a_timeout_and_never_remembered():
    """math-verify's own alarm used to come back as `wrong-answer` and be cached (load-dependent)."""
    verifier = MathVerifier(workers=1, timeout_s=60, policy=Policy(alarm_s=1))
    try:
        assert verifier.check([GAUSS]) == [(0.0, "timeout-alarm")]
        jobs = verifier.pool.stats["jobs"]
        assert verifier.check([GAUSS]) == [(0.0, "timeout-alarm")]
        assert verifier.pool.stats["jobs"] == jobs + 1  # asked again, not read from the memo
    finally:
        verifier.close()


def test_huge_powers_are_refused_before_evaluation():
    verifier = MathVerifier(workers=1, timeout_s=20, policy=Policy(max_exponent_depth=0))  # reach the worker
    try:
        verifier.pool.run([Job("1", "1")])  # start-up is not part of the measurement
        t0 = time.monotonic()
        out = verifier.check([("1", "10^{10^{10}}"), ("1", "(10^{10})!"), ("1", "(x+1)^{10^{9}}"),
                              ("10^{10^{10}}", "1"), ("\\frac{1}{2004!}", "\\frac{1}{2006!}"), ("1", HANG)])
        elapsed = time.monotonic() - t0
        assert out == [(0.0, "number-too-large")] * 3 + [(None, "gold-too-large"), (0.0, "wrong-answer"),
                                                         (0.0, "number-too-large")]
        assert elapsed < 10, elapsed  # each used to run until the hard kill
        assert verifier.pool.stats["timeouts"] == 0
    finally:
        verifier.close()


def test_no_cross_talk_after_an_error_mid_call(monkeypatch):
    """A call that fails with jobs in flight must not leave their answers for the next call."""
    from remask_math import pool as pool_module

    pool = VerifierPool(workers=2, timeout_s=60)
    try:
        assert pool.run([Job("1", "1"), Job("2", "2")]) == [(True, "correct")] * 2
        real_send, sends = pool_module._Worker.send, []

        def failing_second_send(self, job_id, job):
            sends.append(job_id)
            if len(sends) == 2:
                raise RuntimeError("injected failure while dispatching")
            return real_send(self, job_id, job)

        monkeypatch.setattr(pool_module._Worker, "send", failing_second_send)
        with pytest.raises(RuntimeError, match="injected"):
            pool.run([Job(*GAUSS, policy={"alarm_s": 1}), Job("3", "3")])  # the first is still running
        monkeypatch.setattr(pool_module._Worker, "send", real_send)
        deadline = time.monotonic() + 6  # the abandoned job answers within ~2 s, had its worker survived
        while time.monotonic() < deadline:
            assert pool.run([Job("8", "8"), Job("9", "9"), Job("2", "3")]) == [
                (True, "correct"), (True, "correct"), (False, "wrong-answer")]
            time.sleep(0.2)
    finally:
        pool.close()
