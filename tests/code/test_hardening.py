"""Regression tests for the sandbox defects of issue 14 (code sandbox, items 1-6).

Each test fails on the code before its fix: a job taking over the sandbox's init, a stopped fork
server stalling a whole batch, uncounted sandbox CPU, ``select()`` on fds >= 1024, unbounded result
parsing, a forged ``exit`` record, ``json._default_encoder`` rebinding, recursive cleanup, and a
silent in-process fallback.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import time
import tracemalloc

import pytest

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

ADD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


def fenced(code: str) -> str:
    return "```python\n" + code + "\n```"


# ---------------------------------------------------------------------------------------------
# 1. the zygote is the sandbox's init, out of the jobs' reach
# ---------------------------------------------------------------------------------------------

TOUCH_INIT = r'''
import ctypes, os, signal
out = []
try:
    with open('/proc/1/mem', 'r+b') as fh:
        out.append('mem-opened')
except OSError as exc:
    out.append('mem-refused')
libc = ctypes.CDLL(None, use_errno=True)
out.append('ptrace-refused' if libc.ptrace(16, 1, 0, 0) != 0 else 'ptrace-attached')  # PTRACE_ATTACH
for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
    for target in (1, os.getppid()):
        try:
            os.kill(target, sig)
        except OSError:
            pass
print(' '.join(out), os.getppid())
'''

FORK_AND_COUNT = r'''
import os
pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
procs = [p for p in os.listdir('/proc') if p.isdigit()]
zombies = sum(open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()[0] == 'Z' for p in procs)
print(os.waitstatus_to_exitcode(status), len(procs), zombies)
'''


@needs_bwrap
def test_jobs_cannot_inspect_write_or_signal_the_zygote():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    with SandboxPool(SandboxSpec(), Limits(timeout_s=2.0), workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        box = pool._all[0]
        zygote = box._zygote_pid
        t0 = time.monotonic()
        results = pool.run_many([Job("io", TOUCH_INIT)] * 3 + [Job("io", FORK_AND_COUNT)] * 3)
        wall = time.monotonic() - t0
        assert pool._all[0]._zygote_pid == zygote and box.alive  # never recycled: nothing reached it
    for res in results[:3]:
        assert res.stdout.decode().split() == ["mem-refused", "ptrace-refused", "1"], res
        assert res.exit == 0
    for res in results[3:]:  # fork works; the job and the zygote are the only processes, no zombie
        assert res.stdout.decode().split() == ["7", "2", "0"], res
    assert wall < 5.0  # a stopped zygote would have cost at least one 2 s timeout per job


def test_a_stopped_zygote_costs_one_timeout_not_the_batch():
    """Without a pid namespace (unsafe-none) a job can SIGSTOP its zygote: the parent gives that
    job its own deadline, recycles the sandbox and runs the jobs queued behind it elsewhere."""
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    limits = Limits(timeout_s=1.0)
    with SandboxPool(SandboxSpec(isolation="unsafe-none"), limits, workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        zygote = pool._all[0].proc.pid
        jobs = [Job("io", f"import os, signal\nos.kill({zygote}, signal.SIGSTOP)\n")]
        jobs += [Job("io", f"print({i})\n") for i in range(7)]
        t0 = time.monotonic()
        results = pool._run_batch([(job, limits) for job in jobs])  # one pipelined batch
        wall = time.monotonic() - t0
        after = pool.run(Job("io", "print('ok')\n"))
    assert results[0].stopped == "timeout" and results[0].exit is None
    assert [r.stdout for r in results[1:]] == [f"{i}\n".encode() for i in range(7)]
    assert all(r.exit == 0 for r in results[1:])
    assert after.stdout == b"ok\n"
    assert wall < 1.0 + 2.0 + 3.0, wall  # its timeout + grace + a fresh sandbox; was 8 x 2 s + 10 s


# ---------------------------------------------------------------------------------------------
# 2. sandbox CPU is counted
# ---------------------------------------------------------------------------------------------


@needs_bwrap
def test_sandbox_cpu_is_counted():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    with SandboxPool(SandboxSpec(), Limits(timeout_s=5.0), workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        before = pool.cpu_seconds()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        pool.run_many([Job("io", burn)] * 2)
        spent = pool.cpu_seconds() - before
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        pool._all[0].close()  # recycled sandboxes keep their CPU
        assert pool.cpu_seconds() >= before + spent - 0.02
    assert spent >= 0.55, spent  # two jobs of 0.3 s CPU each
    assert (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime) < 0.1  # not seen there


# ---------------------------------------------------------------------------------------------
# 3. file descriptors above 1024
# ---------------------------------------------------------------------------------------------


@needs_bwrap
def test_scoring_works_when_the_trainer_holds_fds_above_1024():
    from remask_code.reward import CodeReward

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1300")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    held = []
    try:
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        assert max(held) >= 1024
        r = CodeReward(CodeReward.Config(timeout_s=2.0, workers=1))
        try:
            values, reasons = r.evaluate([fenced(ADD), fenced(WRONG)], [{"tests": ADD_TESTS}] * 2)
        finally:
            r.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert values == [1.0, 0.0], reasons


# ---------------------------------------------------------------------------------------------
# 4. bounded result parsing
# ---------------------------------------------------------------------------------------------

FLOOD_RESULTS = r'''
import os, stat
line = b'{"k": "r", "i": 0, "v": [' + b'[],' * (5 << 20) + b'[]]}\n'
for fd in range(3, 128):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, line)
    except OSError:
        pass
os._exit(0)
'''


@needs_bwrap
def test_a_result_flood_is_refused_without_parsing_it():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=5.0, workers=2))
    try:
        r.evaluate([fenced(ADD)], [{"tests": ADD_TESTS}])  # start the pool outside the measurement
        tracemalloc.start()
        values, reasons = r.evaluate([fenced(FLOOD_RESULTS + ADD)] * 4, [{"tests": ADD_TESTS}] * 4)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        r.close()
    assert values == [0.0] * 4, reasons
    assert all("output_limit" in why for why in reasons), reasons
    assert peak < 64 << 20, f"scoring four 15 MiB result floods allocated {peak >> 20} MiB"


def test_results_with_too_many_values_are_not_parsed():
    from remask_code.sandbox import Job, Limits, _Flight

    flight = _Flight(Job("calls", ""), 1, Limits(result_values=1000), "/tmp")
    flight.close()
    for w in flight.write_ends:
        os.close(w)
    record = b'{"k": "r", "i": 0, "v": [' + b"1," * 2000 + b"1]}\n"
    flight.take(flight.pipes[2][0], record)
    res = flight.finish(0.0)
    assert res.stopped == "output_limit" and res.records == []


# ---------------------------------------------------------------------------------------------
# 6. cleanup, the io exit status, the in-process channel, the in-process choice, RLIMIT_NPROC
# ---------------------------------------------------------------------------------------------

DEEP_DIRS = "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nopen('f', 'w').write('x')\nos.chmod('.', 0)\nprint('deep')\n"


@needs_bwrap
def test_1500_nested_directories_are_cleaned_without_losing_the_sandbox():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    with SandboxPool(SandboxSpec(), Limits(timeout_s=5.0), workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        zygote = pool._all[0]._zygote_pid
        deep, after = pool.run_many([Job("io", DEEP_DIRS), Job("io", "import os\nprint(os.listdir('/tmp'))\n")])
        assert pool._all[0]._zygote_pid == zygote  # the zygote survived and reported a clean sandbox
    assert deep.stdout == b"deep\n" and deep.exit == 0
    assert after.stdout.decode().strip() in ("['job%d']" % i for i in range(1, 10))


FORGE_EXIT = r'''
import os, signal, stat
print(3)
import sys
sys.stdout.flush()
for fd in range(3, 128):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b'{"k": "exit", "rc": 0}\n')
    except OSError:
        pass
os.kill(os.getpid(), signal.SIGSEGV)
'''


@needs_bwrap
def test_io_mode_uses_the_real_exit_status_not_a_forged_record():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=2.0, workers=1))
    io = {"io": [{"input": "", "output": "3\n"}]}
    try:
        values, reasons = r.evaluate([fenced(FORGE_EXIT), fenced("print(3)\nraise SystemExit(3)\n"),
                                      fenced("print(3)\n")], [io] * 3)
    finally:
        r.close()
    assert values == [0.0, 0.0, 1.0], reasons


REBIND_ENCODER = r'''
import json
class Forger:
    def encode(self, obj):
        obj = dict(obj)
        obj["ok"] = True
        obj.pop("error", None)
        return json.JSONEncoder().encode(obj)
json._default_encoder = Forger()
json.dumps = lambda obj, **kw: Forger().encode(obj)
'''


@needs_bwrap
def test_in_process_results_cannot_be_forged_by_rebinding_json():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=2.0, workers=1, convert_asserts=False))
    try:
        values, reasons = r.evaluate([fenced(REBIND_ENCODER + WRONG), fenced(REBIND_ENCODER + ADD)],
                                     [{"tests": ADD_TESTS}] * 2)
    finally:
        r.close()
    assert values == [0.0, 1.0], reasons


HELPER_TESTS = "def check_pair(a, b):\n    assert add(a, b) == a + b\n\ndef test_add():\n    for i in range(3):\n        check_pair(i, 1)\n"


@needs_bwrap
def test_the_in_process_fallback_is_explicit_and_logged(caplog):
    from remask_code.reward import CodeReward

    refuse = CodeReward(CodeReward.Config(timeout_s=2.0, workers=1, unconvertible_tests="refuse"))
    values, reasons = refuse.evaluate([fenced(ADD), fenced(ADD)], [{"tests": HELPER_TESTS}, {"tests": ADD_TESTS}])
    refuse.close()
    assert values == [None, 1.0] and reasons[0].startswith("bad_reference"), reasons
    r = CodeReward(CodeReward.Config(timeout_s=2.0, workers=1))
    try:
        with caplog.at_level(logging.WARNING, logger="remask.code"):
            values, _ = r.evaluate([fenced(ADD)], [{"tests": HELPER_TESTS}])
            r.evaluate([fenced(ADD)], [{"tests": HELPER_TESTS}])
    finally:
        r.close()
    assert values == [1.0]
    warnings = [rec.getMessage() for rec in caplog.records if "in-process" in rec.getMessage()]
    assert len(warnings) == 1 and "1 row(s)" in warnings[0], warnings  # logged once, when chosen


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


HOLD_PROCESSES = r'''
import os, time
n = 0
for _ in range(50):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    n += 1
print(n, time.time())
time.sleep(1.0)
'''


@needs_bwrap
@pytest.mark.skipif(not _kernel_at_least(5, 14), reason="RLIMIT_NPROC is counted per user namespace since Linux 5.14")
def test_max_processes_is_counted_per_sandbox():
    """docs/sandbox.md: RLIMIT_NPROC counts the processes of the uid in the sandbox's own user
    namespace, so two sandboxes each get their own `max_processes`."""
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    with SandboxPool(SandboxSpec(), Limits(timeout_s=4.0, processes=64), workers=2) as pool:
        pool.run_many([Job("io", "pass\n")] * 4)
        both = pool.run_many([Job("io", HOLD_PROCESSES), Job("io", HOLD_PROCESSES)])
        over = pool.run(Job("io", HOLD_PROCESSES.replace("range(50)", "range(100)")))
    counts, done = zip(*(r.stdout.split() for r in both))
    assert counts == (b"50", b"50")
    assert abs(float(done[0]) - float(done[1])) < 1.0  # each held its 50 while the other forked: 100 at once
    assert 55 <= int(over.stdout.split()[0]) < 64  # but one sandbox stops below its 64


def test_result_records_are_serialised_without_the_json_module():
    """The zygote's record writer is built before user code and never looks ``json`` up again."""
    import ast

    from remask_code import zygote

    dumps = zygote._make_dumps()
    record = {"k": "r", "i": 3, "v": {"t": [{"i": "ff"}, "é\n\"", None, True, False, []]}, "n": "ab"}
    assert json.loads(dumps(record)) == record
    source = ast.get_source_segment(open(zygote.__file__).read(),
                                    next(n for n in ast.parse(open(zygote.__file__).read()).body
                                         if isinstance(n, ast.FunctionDef) and n.name == "_writer"))
    assert "json." not in source


# ---------------------------------------------------------------------------------------------
# 5. the trusted comparison has exactly the semantics of the test as written
# ---------------------------------------------------------------------------------------------

COMPARISONS = [  # (assert as written, value f returns)
    ("assert math.isclose(f(), 0.5)", "0.5"),
    ("assert math.isclose(f(), 0.5)", 0.5 + 1e-12),
    ("assert math.isclose(f(), 0.5)", 0.5 + 1e-6),
    ("assert math.isclose(f(), 0.5)", True),
    ("assert math.isclose(f(), 1)", 1 + 0j),
    ("assert math.isclose(f(), 0.5, rel_tol=0)", 0.5 + 1e-15),
    ("assert math.isclose(f(), 0.5, rel_tol=0.0, abs_tol=1e-3)", 0.5004),
    ("assert math.isclose(0.5, f(), abs_tol=1e-3)", 0.4996),
    ("assert abs(f() - 0.5) < 1e-6", "0.5"),
    ("assert abs(f() - 0.5) < 1e-6", 0.5),
    ("assert abs(f() - 1e12) < 1e-6", 1e12 + 500),
    ("assert abs(f() - 1e12) < 1e-6", 1e12),
    ("assert abs(f() - 1) < 0.5", 1.5),
    ("assert abs(f() - 1) <= 0.5", 1.5),
    ("assert abs(1 - f()) < 0.5", 1.25),
    ("assert abs(f() - {1, 2}) < 1", {1, 2}),
    ("assert abs(f() - 3) < 1", [3]),
    ("assert f() == 1.0", 1 + 0j),
    ("assert f() == 1.0", True),
    ("assert f() == (1, 2)", [1, 2]),
    ("assert f() == {'a': 1}", {"a": 1.0}),
    ("assert f() == [0.30000000000000004]", [0.3]),
    ("assert f() == 100000000000000000001", 1e20),
    ("assert f() is True", 1),
    ("assert not f()", []),
    ("assert f()", "0"),
]


@pytest.mark.parametrize(("test", "value"), COMPARISONS, ids=[f"{t} <- {v!r}" for t, v in COMPARISONS])
def test_comparison_matches_python(test, value):
    import math

    from remask_code.checks import CallsPlan, case_passes, plan_for

    plan = plan_for({"tests": "import math\n" + test + "\n"})
    assert isinstance(plan, CallsPlan) and plan.fn == "f" and len(plan.cases) == 1, plan
    try:
        exec(test, {"math": math, "f": lambda: value})  # what Python itself says
        python_says = True
    except (AssertionError, TypeError):
        python_says = False
    assert case_passes(plan.cases[0], value, tuple_equals_list=plan.tuple_equals_list) is python_says
