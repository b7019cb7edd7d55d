"""The fork server that runs INSIDE one sandbox (never imported by the trusted parent).

The parent (``sandbox.py``) reads this file as text and starts it with
``python3 -I -S -B -c <this source> <control fd> <in pid namespace: 0|1>`` inside bubblewrap as an
unprivileged uid. It pre-imports the common standard library once, then serves jobs one at a time:

* a job arrives on the control socket as a frame ``'J' id length`` (with three pipe write ends
  attached by SCM_RIGHTS: stdout, stderr, result channel) followed by a JSON body; the parent may
  pipeline several, which run one after the other;
* the zygote forks the job (its own child; the zygote is the namespace's init) in a new session
  (process group), with a fresh work dir under /tmp,
  rlimits, stdio on the parent's pipes; the child runs the untrusted program in one of three modes
  (``calls``, ``io``, ``tests``) and ends with ``os._exit`` (atexit hooks and non-daemon threads
  never run);
* the zygote waits with a wall-clock deadline (pidfd + poll), kills the process group when it
  expires or when the parent asks (frame ``'K' id``), reaps the job for its real exit status,
  then sweeps every other process of the pid namespace (``kill(-1, SIGKILL)``), wipes /tmp and
  /dev/shm, and replies with one JSON line.

Everything the parent scores comes from the pipes it holds itself; the zygote's reply only says
whether and why a job was stopped, how it exited (``waitpid``), and whether the sandbox is clean
again. The zygote is the pid namespace's init (``bwrap --as-pid-1``), so no signal from a job
reaches it, and it makes itself non-dumpable, so a job (same uid) cannot ptrace it, write its
``/proc/1/mem`` or open its file descriptors through /proc.
"""

import ast
import builtins
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import types

_PRELOAD = (
    "abc", "array", "bisect", "cmath", "collections", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "io", "itertools", "json",
    "math", "operator", "random", "re", "statistics", "string", "textwrap", "traceback",
    "typing", "unicodedata",
)

_FRAME = struct.Struct("!cxxxIQ")  # kind ('J' job, 'K' kill), job id, body length
_REPLY = struct.Struct("!Q")
_PENDING = []  # job frames that arrived while another job ran: (id, body, fds)


# ---------------------------------------------------------------------------------------------
# Values crossing the result channel: plain builtins only, tagged JSON (never pickle, never repr)
# ---------------------------------------------------------------------------------------------


def _make_encoder():
    """Build the result encoder from references captured before any untrusted code runs."""
    _type, _len, _list, _str, _float_hex = type, len, list, str, float.hex
    _int_hex = int.__format__
    _bytes_hex = bytes.hex
    NoneType = _type(None)

    def encode(value, depth=0, budget=None):
        if budget is None:
            budget = [200_000]
        budget[0] -= 1
        if depth > 64 or budget[0] < 0:
            raise ValueError("result too deep or too large")
        t = _type(value)
        if t is NoneType or t is bool or t is _str:
            return value
        if t is int:
            return {"i": _int_hex(value, "x")}
        if t is float:
            return {"f": _float_hex(value)}
        if t is complex:
            return {"c": [_float_hex(value.real), _float_hex(value.imag)]}
        if t is bytes:
            return {"b": _bytes_hex(value)}
        if t is _list:
            return [encode(v, depth + 1, budget) for v in value]
        if t is tuple:
            return {"t": [encode(v, depth + 1, budget) for v in value]}
        if t is set:
            return {"s": [encode(v, depth + 1, budget) for v in value]}
        if t is frozenset:
            return {"fs": [encode(v, depth + 1, budget) for v in value]}
        if t is dict:
            return {"d": [[encode(k, depth + 1, budget), encode(v, depth + 1, budget)]
                          for k, v in value.items()]}
        raise TypeError("not a plain builtin value")

    return encode


def _make_plain_check():
    """``plain(x)``: True iff x is built only from builtin literal types (no user classes)."""
    _type = type
    scalar = (type(None), bool, int, float, complex, str, bytes)
    containers = (list, tuple, set, frozenset)

    def plain(value, depth=0):
        if depth > 64:
            return False
        t = _type(value)
        if t in scalar:
            return True
        if t in containers:
            return all(plain(v, depth + 1) for v in value)
        if t is dict:
            return all(plain(k, depth + 1) and plain(v, depth + 1) for k, v in value.items())
        return False

    return plain


def _make_checked_ops(plain):
    """The helpers the trusted AST rewrite of assert statements calls (tests mode)."""
    import operator as _op

    ops = {"Eq": _op.eq, "NotEq": _op.ne, "Lt": _op.lt, "LtE": _op.le, "Gt": _op.gt, "GtE": _op.ge,
           "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
           "Is": _op.is_, "IsNot": _op.is_not}
    _bool = bool

    def cmp(name, left, right):
        if not (plain(left) and plain(right)):
            raise AssertionError("comparison of a value that is not a plain builtin")
        return _bool(ops[name](left, right))

    def truth(value):
        if not plain(value):
            raise AssertionError("truth value of a value that is not a plain builtin")
        return _bool(value)

    return cmp, truth


# ---------------------------------------------------------------------------------------------
# The child: one untrusted program
# ---------------------------------------------------------------------------------------------


def _make_dumps():
    """A JSON serializer for result records built only from references captured before any
    untrusted code runs: rebinding ``json._default_encoder``, ``json.dumps`` or anything else in
    ``json`` afterwards cannot change what reaches the parent."""
    _type, _join, _int_repr = type, "".join, int.__repr__
    from json.encoder import encode_basestring_ascii as _quote  # the C function, bound now

    def dumps(obj, depth=0):
        if depth > 200:
            raise ValueError("record too deep")
        t = _type(obj)
        if t is str:
            return _quote(obj)
        if obj is None:
            return "null"
        if obj is True:
            return "true"
        if obj is False:
            return "false"
        if t is int:
            return _int_repr(obj)
        if t is list:
            return "[" + _join([dumps(v, depth + 1) + "," for v in obj])[:-1] + "]" if obj else "[]"
        if t is dict:
            if not obj:
                return "{}"
            return "{" + _join([_quote(k) + ":" + dumps(v, depth + 1) + "," for k, v in obj.items()])[:-1] + "}"
        raise TypeError("not a record value")

    return dumps


def _writer(fd):
    _write = os.write
    _dumps = _make_dumps()

    def emit(obj):
        data = (_dumps(obj) + "\n").encode("utf-8", "surrogatepass")
        while data:
            n = _write(fd, data)
            data = data[n:]

    return emit


def _error_name(exc):
    try:
        name = type.__dict__["__name__"].__get__(type(exc))
        return str(name)[:80]
    except BaseException:  # noqa: BLE001 - anything odd is just "error"
        return "error"


def _flush_stdio(saved):
    for stream in (sys.stdout, sys.stderr, *saved):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass


def _load_solution(code_text, module_name):
    mod = types.ModuleType(module_name)
    mod.__file__ = "solution.py"
    sys.modules[module_name] = mod
    code = compile(code_text, "solution.py", "exec")
    exec(code, mod.__dict__)
    return mod


def _run_calls(job, rfd):
    """Mode (b): run the solution, call ``fn`` on each literal argument list, return literals."""
    emit = _writer(rfd)
    encode = _make_encoder()
    literal_eval = ast.literal_eval
    cases = []
    for args_src, kwargs_src in job["cases"]:
        cases.append((literal_eval(args_src), literal_eval(kwargs_src)))
    saved = (sys.stdout, sys.stderr)
    try:
        mod = _load_solution(job["code"], "solution")
    except BaseException as exc:  # noqa: BLE001
        emit({"k": "load", "error": _error_name(exc)})
        _flush_stdio(saved)
        os._exit(0)
    emit({"k": "load"})
    fn = mod.__dict__.get(job["fn"])
    if not callable(fn):
        emit({"k": "missing"})
        os._exit(0)
    for i, (args, kwargs) in enumerate(cases):
        try:
            value = fn(*args, **kwargs)
            record = {"k": "r", "i": i, "v": encode(value)}
        except BaseException as exc:  # noqa: BLE001 - SystemExit inside a call fails that call
            record = {"k": "r", "i": i, "error": _error_name(exc)}
        emit(record)
    emit({"k": "end"})
    _flush_stdio(saved)
    os._exit(0)


def _run_io(job, rfd):
    """Mode (c): run the program as ``__main__`` on the stdin the zygote attached. The run ends
    with exit status 0 (normal end or ``sys.exit(0)``) or 1 (uncaught exception, other exit
    code). The parent learns that status from the zygote's ``waitpid``, never from anything the
    program writes, so a program cannot claim a normal end it did not have."""
    saved = (sys.stdout, sys.stderr)
    rc = 0
    try:
        code = compile(job["code"], "solution.py", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": builtins, "__file__": "solution.py"})
    except SystemExit as exc:
        try:
            rc = 0 if exc.code is None or exc.code == 0 else 1
        except BaseException:  # noqa: BLE001
            rc = 1
    except BaseException as exc:  # noqa: BLE001
        rc = 1
        try:
            os.write(2, ("error: " + _error_name(exc) + "\n").encode())
        except BaseException:  # noqa: BLE001
            pass
    _flush_stdio(saved)
    os._exit(rc)


def _run_tests(job, rfd):
    """Mode (a): in-process assert tests, with builtins restored after the solution ran and every
    assert rewritten (by the parent) to compare plain builtin values only."""
    emit = _writer(rfd)
    nonce = job.pop("nonce")
    plain = _make_plain_check()
    cmp, truth = _make_checked_ops(plain)
    snapshot = dict(builtins.__dict__)
    _compile, _exec = compile, exec
    saved = (sys.stdout, sys.stderr)
    try:
        mod = _load_solution(job["code"], "solution")
    except BaseException as exc:  # noqa: BLE001
        emit({"k": "load", "error": _error_name(exc), "n": nonce})
        _flush_stdio(saved)
        os._exit(0)
    bdict = builtins.__dict__
    bdict.clear()
    bdict.update(snapshot)
    ns = mod.__dict__
    ns["__remask_cmp"] = cmp
    ns["__remask_truth"] = truth
    try:
        _exec(_compile(job["setup"], "tests.py", "exec"), ns)
    except BaseException as exc:  # noqa: BLE001
        emit({"k": "setup", "error": _error_name(exc), "n": nonce})
        _flush_stdio(saved)
        os._exit(0)
    for i, unit in enumerate(job["units"]):
        try:
            _exec(_compile(unit, "tests.py", "exec"), ns)
            record = {"k": "u", "i": i, "ok": True, "n": nonce}
        except BaseException as exc:  # noqa: BLE001
            record = {"k": "u", "i": i, "ok": False, "error": _error_name(exc), "n": nonce}
        emit(record)
    emit({"k": "end", "n": nonce})
    _flush_stdio(saved)
    os._exit(0)


def _child(job, fds, workdir, stdin_fd):
    out_w, err_w, res_w = fds
    rfd = job["result_fd"]
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    if res_w != rfd:
        os.dup2(res_w, rfd)
    os.closerange(3, rfd)
    os.closerange(rfd + 1, 1 << 16)
    os.chdir(workdir)
    os.umask(0o077)
    lim = job["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.argv = ["solution.py"]
    mode = job["mode"]
    if mode == "calls":
        _run_calls(job, rfd)
    elif mode == "io":
        _run_io(job, rfd)
    elif mode == "tests":
        _run_tests(job, rfd)
    os._exit(70)


# ---------------------------------------------------------------------------------------------
# The zygote loop
# ---------------------------------------------------------------------------------------------


def _recv_exact(sock, n):
    chunks = []
    while n:
        data = sock.recv(min(n, 1 << 20))
        if not data:
            raise EOFError
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def _recv_frame(sock):
    """One frame header (and the fds attached to it) from the parent."""
    header = b""
    fds = []
    while len(header) < _FRAME.size:
        data, anc, _flags, _addr = sock.recvmsg(_FRAME.size - len(header), socket.CMSG_SPACE(8 * 4))
        if not data:
            raise EOFError
        header += data
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(cdata) - len(cdata) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", cdata[:usable]))
    kind, job_id, length = _FRAME.unpack(header)
    return kind, job_id, length, fds


def _send_reply(sock, obj):
    body = json.dumps(obj).encode()
    sock.sendall(_REPLY.pack(len(body)) + body)


def _open_stdin(text, workdir):
    if text is None:
        return os.open("/dev/null", os.O_RDONLY)
    path = os.path.join(workdir, ".stdin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = memoryview(text.encode("utf-8", "surrogateescape"))
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    return fd


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _sweep(in_pidns):
    """Kill every process of the pid namespace except this zygote (its init). Returns the number of
    rounds it took, or -1 when something survived (the parent then recycles the sandbox)."""
    if not in_pidns:
        _reap()
        return 0
    me = os.getpid()
    for attempt in range(200):
        try:
            os.kill(-1, signal.SIGKILL)  # every process but the caller and init (= the caller)
        except ProcessLookupError:
            pass
        _reap()
        alive = [p for p in os.listdir("/proc")
                 if p.isdigit() and int(p) not in (1, me) and not _is_zombie(p)]
        if not alive:
            return attempt
        time.sleep(0.002)
    return -1


def _wipe(path):
    """Remove everything below ``path``; True when it is empty afterwards.

    Iterative and relative to the current directory: a job may leave thousands of nested
    directories (no recursion limit, no path longer than PATH_MAX) and may have chmod-ed them.
    Only called after the sweep, so nothing in the sandbox changes the tree meanwhile; symlinks
    are unlinked, never followed."""
    try:
        os.chdir(path)
    except OSError:
        return False

    def listing():
        with os.scandir(".") as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]

    clean = True
    try:
        names = []  # directories entered below ``path``, deepest last
        pending = [listing()]  # entries still to remove, one list per level
        while pending:
            if not pending[-1]:
                pending.pop()
                if names:
                    os.chdir("..")
                    try:
                        os.rmdir(names.pop())
                    except OSError:
                        clean = False
                continue
            name, is_dir = pending[-1].pop()
            try:
                if not is_dir:
                    os.unlink(name)
                    continue
                os.chmod(name, 0o700)  # a real directory (is_dir did not follow links)
                os.chdir(name)
            except OSError:
                clean = False
                continue
            names.append(name)
            try:
                pending.append(listing())
            except OSError:
                pending.append([])
                clean = False
        return clean and not os.listdir(".")
    except OSError:
        return False
    finally:
        try:
            os.chdir("/")
        except OSError:
            pass


def _launch(job, fds, workdir, stdin_fd):
    """Fork the job J, which calls setsid (its process group is its pid). J is the zygote's child:
    ``os.kill(os.getppid(), SIGKILL)`` targets the namespace's init, which the kernel shields from
    its namespace's signals, and the zygote alone can ``waitpid`` J for its real exit status.
    (Earlier versions forked through a short-lived leader so that J's parent would be bwrap's
    init; with the zygote as init that second fork only cost CPU.) Returns J's pid."""
    job_pid = os.fork()
    if job_pid == 0:
        try:
            os.setsid()
            _child(job, fds, workdir, stdin_fd)
        finally:
            os._exit(70)
    return job_pid


def _wait(ctl, job_pid, job_id, timeout):
    """Wait for the job with a wall-clock deadline; stop its process group on expiry or when the
    parent asks ('K'). Returns (how it was stopped: "" = it ended by itself, its wait status or
    None)."""
    deadline = time.monotonic() + timeout
    stopped = ""
    gone = False
    try:
        watch = os.pidfd_open(job_pid) if job_pid > 0 else -1
    except ProcessLookupError:
        watch = -1  # already over
    poller = select.poll()
    if watch >= 0:
        poller.register(watch, select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    try:
        while watch >= 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = "timeout"
                break
            ready = {fd for fd, _ in poller.poll(remaining * 1000.0)}
            if watch in ready:
                break
            if ctl.fileno() in ready:
                try:
                    kind, kid, length, fds = _recv_frame(ctl)
                except (EOFError, ConnectionError):
                    stopped, gone = "killed", True
                    break
                body = _recv_exact(ctl, length) if length else b""
                if kind == b"J":
                    _PENDING.append((kid, body, fds))  # pipelined: run after this one
                    continue
                for fd in fds:
                    os.close(fd)
                if kind == b"K" and kid == job_id:
                    stopped = "killed"
                    break
    finally:
        if stopped:
            for kill in (os.killpg, os.kill):  # J is not reaped yet: its pid cannot be reused
                try:
                    kill(job_pid, signal.SIGKILL)
                except OSError:
                    pass
        if watch >= 0:
            os.close(watch)
    status = _collect(job_pid)
    if gone:
        raise EOFError
    return stopped, status


def _collect(job_pid):
    """Reap J; its wait status, or None when it cannot be had within 2 s."""
    give_up = time.monotonic() + 2.0
    while True:
        try:
            pid, status = os.waitpid(job_pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid:
            return status
        if time.monotonic() > give_up:
            return None
        time.sleep(0.0005)


def main():
    ctl = socket.socket(fileno=int(sys.argv[1]))
    in_pidns = sys.argv[2] == "1"
    # Jobs run as this uid. Non-dumpable: a job can neither ptrace this process nor open its
    # /proc/<pid>/mem or fds. In a pid namespace this process is its init (bwrap --as-pid-1), which
    # the kernel shields from every signal sent from inside without a handler (SIGKILL, SIGSTOP
    # included); without one it becomes a child subreaper so that jobs are still its children.
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
        if not in_pidns:
            prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 - then the parent's deadlines are what bound a job
        pass
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import gc

    gc.collect()
    gc.freeze()  # jobs' collections skip the preloaded objects: fewer copy-on-write page copies
    _send_reply(ctl, {"ready": True, "python": sys.version.split()[0], "uid": os.getuid(),
                      "pid": os.getpid()})
    scratch = ("/tmp", "/dev/shm") if in_pidns else ()
    try:
        while True:
            if _PENDING:
                job_id, body, fds = _PENDING.pop(0)
            else:
                kind, job_id, length, fds = _recv_frame(ctl)
                body = _recv_exact(ctl, length) if length else b""
                if kind != b"J":
                    for fd in fds:
                        os.close(fd)
                    continue
            t0 = time.monotonic()
            try:
                job = json.loads(body)
                workdir = job["workdir"]
                os.makedirs(workdir, 0o700, exist_ok=True)
                stdin_fd = _open_stdin(job.get("stdin"), workdir)
            except Exception as exc:  # noqa: BLE001 - e.g. a stdin larger than the tmpfs
                for fd in fds:
                    os.close(fd)
                clean = all(_wipe(p) for p in scratch) if scratch else True
                _send_reply(ctl, {"id": job_id, "stopped": "setup_error: " + type(exc).__name__,
                                  "wall_s": time.monotonic() - t0, "clean": bool(clean)})
                continue
            job_pid = _launch(job, fds, workdir, stdin_fd)
            for fd in fds:
                os.close(fd)
            os.close(stdin_fd)
            stopped, status = _wait(ctl, job_pid, job_id, float(job["timeout_s"]))
            rounds = _sweep(in_pidns)
            clean = all(_wipe(p) for p in scratch) if scratch else _wipe(workdir)
            if not scratch:
                try:
                    os.rmdir(workdir)
                except OSError:
                    clean = False
            reply = {"id": job_id, "stopped": stopped, "wall_s": time.monotonic() - t0,
                     "clean": bool(clean and rounds >= 0), "exit": None, "signal": None}
            if status is not None and os.WIFEXITED(status):
                reply["exit"] = os.WEXITSTATUS(status)
            elif status is not None and os.WIFSIGNALED(status):
                reply["signal"] = os.WTERMSIG(status)
            _send_reply(ctl, reply)
    except (EOFError, ConnectionError):
        os._exit(0)


if __name__ == "__main__":
    main()
