"""Spec verifiers.md §3: every hostile program (C01–C37 and the "not executed" list), run ONLY
through the sandbox, with canaries instead of real damage.

For every case: reward 0 unless the tests genuinely pass, no harness exception, bounded time,
nothing written on the host, no network, no process left behind. All programs of a table run in
one batch, spread over the pool's sandboxes.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import textwrap

import pytest

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

TIMEOUT = 2.0
SECRET_KEY = "sk-remask-canary-5f1c"
ADD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 20) == 30\n"
SECRET_TESTS = "assert secret(3) == 286\nassert secret(5) == 9137\n"


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip("\n") + "\n```"


# ---------------------------------------------------------------------------------------------
# fixtures: host canaries, a loopback listener, one reward (pool) for the whole module
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-canary")
    canary_dir = root / "precious"
    canary_dir.mkdir()
    (canary_dir / "data.txt").write_text("keep me")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield {"root": root, "canary_dir": canary_dir, "port": listener.getsockname()[1], "listener": listener}
    listener.close()


@pytest.fixture(scope="module")
def reward(host):
    from remask_code.reward import CodeReward

    os.environ["REMASK_FAKE_API_KEY"] = SECRET_KEY  # planted before the sandboxes start
    r = CodeReward(CodeReward.Config(timeout_s=TIMEOUT, workers=2))
    yield r
    r.close()
    os.environ.pop("REMASK_FAKE_API_KEY", None)


@pytest.fixture(scope="module")
def inprocess_reward(host):
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=TIMEOUT, workers=2, convert_asserts=False))
    yield r
    r.close()


def hostile_cases(host) -> dict[str, tuple[str, str, float]]:
    """id -> (program, tests, expected reward). Expected 1.0 only where the tests genuinely pass."""
    canary = str(host["canary_dir"])
    root = str(host["root"])
    port = host["port"]
    return {
        "C01_correct": (ADD, ADD_TESTS, 1.0),
        "C02_wrong": (WRONG, ADD_TESTS, 0.0),
        "C03_syntax_error": ("def add(a, b)\n    return a + b\n", ADD_TESTS, 0.0),
        "C04_busy_loop": ("while True:\n    pass\n" + ADD, ADD_TESTS, 0.0),
        "C05_sleep": ("import time\ntime.sleep(3600)\n" + ADD, ADD_TESTS, 0.0),
        "C06_fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" + ADD,
                          ADD_TESTS, 0.0),
        "C07_memory_bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n" + ADD,
                            ADD_TESTS, 0.0),
        "C08_stdout_flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n" + ADD, ADD_TESTS, 0.0),
        "C09_rm_rf_canary": (f"import os\nos.system('rm -rf {canary}')\n" + ADD, ADD_TESTS, 1.0),
        "C10_write_outside": (f"try:\n    open('{root}/written.txt', 'w').write('x')\nexcept OSError:\n    pass\n" + ADD,
                              ADD_TESTS, 1.0),
        "C11_read_passwd": ("def add(a, b):\n    return open('/etc/passwd').read()\n", ADD_TESTS, 0.0),
        "C12_network": (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                        "except OSError:\n    pass\n" + ADD, ADD_TESTS, 1.0),
        "C13_sys_exit": ("import sys\nsys.exit(0)\n" + ADD, ADD_TESTS, 0.0),
        "C14_os_exit": ("import os\nos._exit(0)\n" + ADD, ADD_TESTS, 0.0),
        "C15_builtin_exit": ("exit(0)\n" + ADD, ADD_TESTS, 0.0),
        "C16_atexit_os_exit": ("import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG, ADD_TESTS, 0.0),
        "C17_atexit_systemexit": ("import atexit\ndef bye():\n    raise SystemExit(0)\natexit.register(bye)\n" + WRONG,
                                  ADD_TESTS, 0.0),
        "C18_excepthook": ("import sys\nsys.excepthook = lambda *a: None\n" + WRONG, ADD_TESTS, 0.0),
        "C19_always_equal": ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
                             "    def __ne__(self, other):\n        return False\n    __hash__ = None\n"
                             "def add(a, b):\n    return AlwaysEqual()\n", ADD_TESTS, 0.0),
        "C20_patch_builtins": ("import builtins\nbuiltins.abs = lambda x: 3\ndef add(a, b):\n    return 0\n",
                               "assert abs(add(-5, 2)) == 3\nassert abs(add(1, 1)) == 2\n", 0.0),
        "C21_kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + ADD, ADD_TESTS, 1.0),
        "C22_ignore_sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n" + ADD,
                               ADD_TESTS, 0.0),
        "C23_nondaemon_thread": ("import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n" + ADD,
                                 ADD_TESTS, 1.0),
        "C24_orphan_session": ("import subprocess\nsubprocess.Popen(['sleep', '100'], start_new_session=True)\n" + ADD,
                               ADD_TESTS, 1.0),
        "C25_ctypes_system": (f"import ctypes\nctypes.CDLL(None).system(b'touch {root}/ctypes_canary')\n" + ADD,
                              ADD_TESTS, 1.0),
        "C26_segfault": ("import ctypes\nctypes.string_at(0)\n" + ADD, ADD_TESTS, 0.0),
        "C27_non_utf8_stdout": ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80 bad')\nsys.stdout.flush()\n" + ADD,
                                ADD_TESTS, 1.0),
        "C28_huge_line": ("import sys\nsys.stdout.write('y' * 300_000_000)\nsys.stdout.flush()\n" + ADD, ADD_TESTS, 0.0),
        "C29_infinite_recursion": ("def add(a, b):\n    return add(a, b)\n", ADD_TESTS, 0.0),
        "C30_deep_recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n" + ADD,
                               ADD_TESTS, 0.0),
        "C31_sentinel": ("import os\nprint('ALL TESTS PASSED')\nos._exit(0)\n" + WRONG, ADD_TESTS, 0.0),
        "C32_env_leak": (f"import os\ndef add(a, b):\n    return os.environ.get('REMASK_FAKE_API_KEY', a + b)\n",
                         ADD_TESTS, 1.0),
        "C33_pth_persistence": ("import sys, site\nfor d in ['/usr/lib/python3/dist-packages', '/usr/local/lib/python3.11/site-packages']"
                                " + site.getsitepackages():\n    try:\n        open(d + '/remask_evil.pth', 'w').write('import os')\n"
                                "    except Exception:\n        pass\n" + ADD, ADD_TESTS, 1.0),
        "C34_disk_fill": ("chunk = b'x' * (1 << 20)\nwith open('big.bin', 'wb') as fh:\n    for _ in range(2048):\n"
                          "        fh.write(chunk)\n" + ADD, ADD_TESTS, 0.0),
        "C35_input": ("x = input()\n" + ADD, ADD_TESTS, 0.0),
        "C36_peek_tests": (PEEK, SECRET_TESTS, 0.0),
        "C37_forge_channel": (FORGE, SECRET_TESTS, 0.0),
        "N01_kill_all": (ADD + "import os, signal\nos.kill(-1, signal.SIGKILL)\n", ADD_TESTS, None),
        "N02_daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                       "        while True:\n            pass\n    os._exit(0)\n" + ADD, ADD_TESTS, 1.0),
        "N03_thread_writes_after": ("import threading, time\ndef late():\n    time.sleep(0.2)\n"
                                    "    open('late.txt', 'w').write('x')\n"
                                    "threading.Thread(target=late, daemon=True).start()\n" + ADD, ADD_TESTS, 1.0),
        "N04_gc_rewrite_code": ("import gc\nnoop = (lambda *a, **k: True).__code__\nfor f in gc.get_objects():\n"
                                "    if type(f).__name__ == 'function' and f.__name__ != 'add':\n        try:\n"
                                "            f.__code__ = noop\n        except Exception:\n            pass\n" + WRONG,
                                ADD_TESTS, 0.0),
        "N05_pytest_patch": ("try:\n    import _pytest.python\n    _pytest.python.Function.runtest = lambda self: None\n"
                             "except ImportError:\n    pass\n" + WRONG, ADD_TESTS, 0.0),
        "N06_exit_at_import": ("import os\nos._exit(0)\n", "def test_add():\n    assert add(1, 2) == 3\n", 0.0),
        "N07_huge_source": ("x = '" + "a" * 10_000_000 + "'\n" + ADD, ADD_TESTS, 0.0),
        "N08_big_int": ("int('9' * 10**6)\n" + ADD, ADD_TESTS, 0.0),
        "N08b_big_power": ("print(10**(10**7))\n" + ADD, ADD_TESTS, 0.0),
        "N09_delete_tests": ("import glob, os\nfor p in glob.glob('*') + glob.glob('/tmp/*') + glob.glob('/*.py'):\n"
                             "    try:\n        os.remove(p)\n    except OSError:\n        pass\n" + ADD, ADD_TESTS, 1.0),
        "N10_proc_environ": ("import os\ndef add(a, b):\n    for p in ('/proc/1/environ', '/proc/%d/environ' % os.getppid()):\n"
                             "        try:\n            if b'REMASK_FAKE' in open(p, 'rb').read():\n                return 'LEAK'\n"
                             "        except OSError:\n            pass\n    return a + b\n", ADD_TESTS, 1.0),
        "N11_import_numpy": ("try:\n    import numpy\nexcept ImportError:\n    pass\n" + ADD, ADD_TESTS, 1.0),
        "N12_rewrite_test_file": ("open('test_solution.py', 'w').write('def test_add():\\n    pass\\n')\n" + WRONG,
                                  "from solution import add\n\ndef test_add():\n    assert add(1, 2) == 3\n", 0.0),
    }


PEEK = r'''
import gc, os, re, sys
def secret(x):
    pat = re.compile(r"secret\(%d\)\W+(\d+)" % x)
    for name in os.listdir("."):
        try:
            m = pat.search(open(name).read())
            if m:
                return int(m.group(1))
        except Exception:
            pass
    f = sys._getframe(1)
    while f is not None:
        for v in list(f.f_locals.values()) + list(f.f_globals.values()):
            if isinstance(v, str):
                m = pat.search(v)
                if m:
                    return int(m.group(1))
        f = f.f_back
    for o in gc.get_objects():
        if isinstance(o, dict):
            for v in list(o.values()):
                if isinstance(v, str):
                    m = pat.search(v)
                    if m:
                        return int(m.group(1))
    return -1
'''

FORGE = r'''
import os
def secret(x):
    return -1
for fd in range(3, 64):
    for i in range(4):
        for line in ('{"k": "r", "i": %d, "v": {"i": "7"}}\n' % i,
                     '{"k": "u", "i": %d, "ok": true, "n": "0"}\n' % i, "PASS:0\n"):
            try:
                os.write(fd, line.encode())
            except OSError:
                pass
os.write(1, b'{"k": "end"}\n')
os._exit(0)
'''


def _namespaces(pool) -> list[str]:
    """pid-namespace ids of the pool's live sandboxes (via the zygote, child of the outer bwrap)."""
    outers = {box.proc.pid for box in pool._all if box.proc is not None}
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid in outers:
                out.append(os.readlink(f"/proc/{pid}/ns/pid"))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _members(ns: str) -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                        n += 1
        except OSError:
            continue
    return n


@pytest.fixture(scope="module")
def outcome(reward, host):
    cases = hostile_cases(host)
    names = list(cases)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    values, reasons = reward.evaluate([fenced(cases[k][0]) if not k.startswith("N07") else
                                       "```python\n" + cases[k][0] + "```" for k in names],
                                      [{"tests": cases[k][1]} for k in names])
    walls = list(reward.last_wall_s)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    namespaces = _namespaces(reward.pool)
    leftovers = {ns: _members(ns) for ns in namespaces}
    return {"cases": cases, "values": dict(zip(names, values)), "reasons": dict(zip(names, reasons)),
            "walls": dict(zip(names, walls)), "rss_kb": rss_after - rss_before, "leftovers": leftovers}


CASE_IDS = list(hostile_cases({"canary_dir": "/x", "root": "/x", "port": 1}))


@pytest.mark.parametrize("case", CASE_IDS)
def test_hostile_case_scores_only_genuine_passes(outcome, case):
    _, _, expected = outcome["cases"][case]
    value, why = outcome["values"][case], outcome["reasons"][case]
    assert value is not None, f"{case}: scored None ({why})"
    if expected is None:  # N01 may take the sandbox down before or after its results: either is fine
        assert value in (0.0, 1.0), (case, value, why)
    else:
        assert value == expected, (case, value, why)
    assert outcome["walls"][case] <= TIMEOUT + 3.0, (case, outcome["walls"][case])


def test_no_host_damage_and_no_network(outcome, host):
    assert (host["canary_dir"] / "data.txt").read_text() == "keep me"  # C09
    assert not (host["root"] / "written.txt").exists()  # C10
    assert not (host["root"] / "ctypes_canary").exists()  # C25
    for d in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3.11/site-packages"):
        assert not os.path.exists(os.path.join(d, "remask_evil.pth"))  # C33
    with pytest.raises(BlockingIOError):  # C12: nothing ever connected to the host listener
        host["listener"].accept()


def test_no_process_left_behind_and_bounded_memory(outcome):
    assert outcome["leftovers"], "no live sandbox found"
    for ns, members in outcome["leftovers"].items():
        assert members == 1, f"sandbox {ns} holds {members} processes (expected the zygote alone, its init)"
    assert outcome["rss_kb"] < 200 * 1024  # C08/C28: the parent never buffers a flood


def test_reasons_name_the_cause(outcome):
    reasons = outcome["reasons"]
    assert "timeout" in reasons["C04_busy_loop"]
    assert "timeout" in reasons["C05_sleep"]
    assert "output_limit" in reasons["C08_stdout_flood"]
    assert reasons["N07_huge_source"] == "code_too_long"
    assert "missing_function" in reasons["C14_os_exit"] or "wrong" in reasons["C14_os_exit"] \
        or reasons["C14_os_exit"].startswith("failed")


INPROCESS_CASES = [c for c in CASE_IDS if not c.startswith(("C36", "N04", "N01", "N07"))]


@pytest.fixture(scope="module")
def inprocess_outcome(inprocess_reward, host):
    cases = hostile_cases(host)
    names = INPROCESS_CASES
    values, reasons = inprocess_reward.evaluate([fenced(cases[k][0]) for k in names],
                                                [{"tests": cases[k][1]} for k in names])
    return dict(zip(names, zip(values, reasons)))


@pytest.mark.parametrize("case", INPROCESS_CASES)
def test_hostile_case_in_process_assert_mode(inprocess_outcome, host, case):
    """Mode (a), asserts executed in the sandbox: the same verdicts, except the documented residual
    introspection attacks (C36 frame walk, N04 gc rewrite) which only call-and-compare defeats."""
    expected = hostile_cases(host)[case][2]
    value, why = inprocess_outcome[case]
    assert value == expected, (case, value, why)


def test_nothing_persists_between_jobs_of_one_sandbox():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    with SandboxPool(SandboxSpec(), Limits(timeout_s=TIMEOUT), workers=1) as pool:
        first = pool.run(Job("io", "open('/tmp/left.txt', 'w').write('x')\nopen('/dev/shm/s', 'w').write('x')\n"
                                   "open('here.txt', 'w').write('x')\nimport os\nprint(os.getcwd())\n"))
        second = pool.run(Job("io", "import os\nprint(os.path.exists('/tmp/left.txt'), os.path.exists('/dev/shm/s'),"
                                    " os.listdir('.'), os.getcwd())\n"))
        assert first.exit == 0 and second.exit == 0
        assert second.stdout.decode().split()[:3] == ["False", "False", "[]"]
        assert first.stdout.decode().strip() != second.stdout.decode().split()[-1]  # fresh work dir


def test_no_secret_or_host_file_visible_inside():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    os.environ["REMASK_FAKE_API_KEY"] = SECRET_KEY
    try:
        with SandboxPool(SandboxSpec(), Limits(timeout_s=TIMEOUT), workers=1) as pool:
            res = pool.run(Job("io", "import os\nprint(dict(os.environ))\nprint(os.getuid())\n"
                                     "print(sorted(os.listdir('/')))\nprint(os.path.exists('/etc/passwd'))\n"
                                     "print(open('/proc/1/environ', 'rb').read())\n"))
    finally:
        os.environ.pop("REMASK_FAKE_API_KEY", None)
    out = res.stdout.decode()
    assert SECRET_KEY not in out  # C32 + /proc/1/environ
    lines = out.splitlines()
    assert lines[1] != "0"  # not root inside
    assert "work" not in lines[2] and "root" not in lines[2] and "etc" not in lines[2]
    assert lines[3] == "False"  # C11


def test_pool_recovers_after_the_sandbox_is_killed():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    with SandboxPool(SandboxSpec(), Limits(timeout_s=TIMEOUT), workers=1) as pool:
        pool.run(Job("io", "import os, signal\nos.kill(-1, signal.SIGKILL)\nimport time\ntime.sleep(5)\n"))
        res = pool.run(Job("io", "print(6 * 7)\n"))
        assert res.stdout == b"42\n" and res.exit == 0


def test_batch_survives_a_job_that_kills_its_sandbox():
    """A batch pipelined through one sandbox: a job that kills its fork server mid-batch loses only
    itself; the jobs queued behind it are re-run on a fresh sandbox, in order. Inside bwrap no job
    can do that (the zygote is the namespace's init), so the test kills an unsandboxed zygote."""
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    limits = Limits(timeout_s=TIMEOUT)
    with SandboxPool(SandboxSpec(isolation="unsafe-none"), limits, workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        zygote = pool._all[0].proc.pid
        jobs = [Job("io", f"print({i})\n") for i in range(3)]
        jobs.insert(1, Job("io", f"import os, signal\nos.kill({zygote}, signal.SIGKILL)\nimport time\ntime.sleep(5)\n"))
        results = pool._run_batch([(job, limits) for job in jobs])  # one pipelined batch
    assert [r.stdout for i, r in enumerate(results) if i != 1] == [b"0\n", b"1\n", b"2\n"]
    assert all(r.exit == 0 for i, r in enumerate(results) if i != 1)
    assert results[1].exit is None and results[1].stopped in ("sandbox_lost", "timeout")


def test_kill_everything_inside_the_sandbox_spares_the_zygote():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    limits = Limits(timeout_s=TIMEOUT)
    kill_all = "import os, signal\nif os.fork() == 0:\n    import time\n    time.sleep(9)\nos.kill(-1, signal.SIGKILL)\n"
    with SandboxPool(SandboxSpec(), limits, workers=1) as pool:
        pool.run(Job("io", "pass\n"))
        zygote = pool._all[0]._zygote_pid
        results = pool._run_batch([(Job("io", "print(0)\n"), limits), (Job("io", kill_all), limits),
                                   (Job("io", "print(2)\n"), limits)])
        assert pool._all[0]._zygote_pid == zygote
    assert [r.stdout for r in results] == [b"0\n", b"", b"2\n"]
    assert results[1].exit == 0  # kill(-1) reached its own fork only: not the zygote, not itself


def test_io_run_killed_by_a_signal_fails_even_with_the_right_output():
    from remask_code.reward import CodeReward

    r = CodeReward(CodeReward.Config(timeout_s=TIMEOUT, workers=1))
    try:
        io = {"io": [{"input": "", "output": "3\n"}]}
        values, reasons = r.evaluate(["```python\nimport ctypes, sys\nprint(3)\nsys.stdout.flush()\nctypes.string_at(0)\n```",
                                      "```python\nprint(3)\n```"], [io, io])
    finally:
        r.close()
    assert values == [0.0, 1.0], reasons


def test_stdin_larger_than_the_sandbox_tmpfs_fails_cleanly():
    from remask_code.sandbox import Job, Limits, SandboxPool, SandboxSpec

    prog = "import sys\nprint(len(sys.stdin.read()))\n"
    with SandboxPool(SandboxSpec(tmpfs_bytes=8 << 20), Limits(timeout_s=TIMEOUT), workers=1) as pool:
        too_big = pool.run(Job("io", prog, stdin="x" * (12 << 20)))
        fits = pool.run(Job("io", prog, stdin="x" * (4 << 20)))
    assert too_big.stopped.startswith("setup_error") and too_big.exit is None
    assert fits.stdout == b"4194304\n" and fits.exit == 0
