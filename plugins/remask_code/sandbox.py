"""Trusted side of the code sandbox: a pool of bubblewrap sandboxes, each running one fork server.

Layout (spec verifiers.md §5)::

    trainer process ──socketpair──▶ setpriv (uid 65534) ─▶ bwrap --unshare-all --as-pid-1 ... ─▶ python3 -I -S zygote
        │                                                       (pid 1 of its own pid namespace)
        └── per job: three pipes (stdout, stderr, results) whose write ends travel by SCM_RIGHTS

The parent reads every byte a job produces itself, with caps, and scores only what it read; exit
codes and stdout sentinels never mean success. A job is killed on its wall-clock deadline by the
zygote, and the whole sandbox is killed (and replaced) if the zygote misses a deadline of its own,
dies, or reports that something survived its sweep. The parent also gives each job of a
pipelined batch its own deadline (its timeout + 2 s from the moment the job before it was
answered), so a zygote that stops answering costs one timeout, not the batch's.

CPU: the zygote is the namespace's init and reaps every process of its sandbox, so its
``/proc/<pid>/stat`` (utime + stime + cutime + cstime) holds the whole tree's CPU;
:meth:`SandboxPool.cpu_seconds` sums it over the pool (the trainer's own ``RUSAGE_CHILDREN`` never
sees it: nobody on the host reaps the zygote).
"""

from __future__ import annotations

import array
import functools
import json
import logging
import os
import queue
import random
import secrets
import select
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remask.errors import RemaskError

logger = logging.getLogger("remask.code")

_FRAME = struct.Struct("!cxxxIQ")  # kind, job id, body length (mirrors zygote.py)
_REPLY = struct.Struct("!Q")
_GRACE_S = 2.0  # a job's answer may come this long after its timeout (reap, sweep, wipe, reply)
_ZYGOTE_SOURCE = (Path(__file__).with_name("zygote.py")).read_text(encoding="utf-8")


class SandboxError(RemaskError):
    """The code sandbox cannot run on this machine (bwrap missing, user namespaces disabled...)."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits applied in the forked child (rlimits) and by the parent (caps)."""

    timeout_s: float = 5.0  # wall clock per program
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    open_files: int = 128  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC (counted per uid in the sandbox's own user namespace)
    output_bytes: int = 4 << 20  # stdout+stderr+results read before the job is killed
    result_values: int = 50_000  # results holding more JSON values are not parsed (output_limit)
    keep_stderr_bytes: int = 4096  # stderr kept for reasons / debugging

    @property
    def cpu_s(self) -> int:
        return int(self.timeout_s) + 1


@dataclass
class Job:
    """One program run. ``payload`` holds the mode-specific fields the zygote reads."""

    mode: str  # "calls" | "io" | "tests"
    code: str
    payload: dict[str, Any] = field(default_factory=dict)
    stdin: str | None = None


@dataclass
class JobResult:
    """What the parent observed. ``stopped``: "" (ran to its end), "timeout", "output_limit"
    (more than ``Limits.output_bytes`` of output, or results of more than ``Limits.result_values``
    values: nothing of it is parsed), "sandbox_lost" (the sandbox died under the job). ``exit``:
    the program's exit status from the zygote's ``waitpid`` (io mode: 0 = normal end, 1 = uncaught
    exception or non-zero ``sys.exit``), None when it was killed by a signal (``signal``) or the
    status is unknown. Nothing the program writes can set either."""

    stopped: str = ""
    exit: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    records: list[dict[str, Any]] = field(default_factory=list)
    nonce: str = ""
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# Finding an interpreter and building the bwrap command line
# ---------------------------------------------------------------------------------------------


def _others_can_run(path: str) -> bool:
    """True when a different, unprivileged uid can execute ``path`` (every parent dir o+x)."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & 0o005 == 0o005:
            return False
        parent = os.path.dirname(real)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def find_python(requested: str, unprivileged: bool) -> str:
    """The interpreter the sandbox runs: ``requested`` or the first usable of
    ``/usr/bin/python3`` and this process's interpreter."""
    if requested:
        if not os.path.exists(requested):
            raise SandboxError(f"code sandbox: python {requested!r} does not exist")
        return requested
    import sys

    for candidate in ("/usr/bin/python3", sys.executable):
        if candidate and os.path.exists(candidate) and (not unprivileged or _others_can_run(candidate)):
            return os.path.realpath(candidate)
    raise SandboxError(
        "code sandbox: no Python interpreter the sandbox uid can execute "
        "(install python3 under /usr, or set the reward's `python` field to a world-readable one)"
    )


@functools.lru_cache(maxsize=8)
def _bwrap_features(bwrap: str) -> frozenset[str]:
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    text = out.stdout + out.stderr
    return frozenset(flag for flag in ("--disable-userns", "--size", "--remount-ro", "--clearenv", "--as-pid-1")
                     if flag in text)


@dataclass(frozen=True)
class SandboxSpec:
    """How sandboxes are started. ``isolation`` is "bwrap" or "unsafe-none" (explicit opt-in)."""

    isolation: str = "bwrap"
    python: str = ""
    uid: int = 65534
    tmpfs_bytes: int = 64 << 20
    shm_bytes: int = 16 << 20
    jobs_per_sandbox: int = 2000  # recycle the fork server after this many programs

    def command(self, ctl_fd: int) -> tuple[list[str], str]:
        """(argv, workdir root) of one sandbox. Raises :class:`SandboxError` when impossible."""
        root = os.geteuid() == 0
        if self.isolation == "unsafe-none":
            python = find_python(self.python, unprivileged=False)
            return [python, "-I", "-S", "-B", "-c", _ZYGOTE_SOURCE, str(ctl_fd), "0"], ""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError(
                "code reward: bubblewrap (`bwrap`) is not installed, so untrusted code cannot be "
                "sandboxed; install it (`apt-get install -y bubblewrap`) or, only on a disposable "
                "machine, set `isolation: unsafe-none` in the reward's config"
            )
        python = find_python(self.python, unprivileged=root)
        features = _bwrap_features(bwrap)
        if "--as-pid-1" not in features:
            raise SandboxError(f"code sandbox: {bwrap} has no --as-pid-1 (needed so that the fork "
                               "server is the sandbox's init, out of the jobs' reach); install a newer "
                               "bubblewrap")
        argv: list[str] = []
        if root:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise SandboxError("code sandbox: running as root needs `setpriv` (util-linux) to "
                                   "drop to an unprivileged uid; RLIMIT_NPROC does not apply to root")
            argv += [setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                     "--no-new-privs", "--"]
        argv += [bwrap, "--unshare-all", "--unshare-user", "--as-pid-1"]
        if "--disable-userns" in features:
            argv.append("--disable-userns")
        argv += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox",
                 "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                 "--setenv", "LC_ALL", "C.UTF-8",
                 "--ro-bind", "/usr", "/usr"]
        for top in ("bin", "lib", "lib32", "lib64", "sbin"):
            path = "/" + top
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        real = os.path.realpath(python)
        if not real.startswith("/usr/") and not any(real.startswith(f"/{t}/") for t in ("bin", "lib", "lib64")):
            prefix = os.path.dirname(os.path.dirname(real))
            argv += ["--ro-bind", prefix, prefix]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if "--size" in features:
            argv += ["--size", str(self.tmpfs_bytes)]
        argv += ["--tmpfs", "/tmp"]
        if "--size" in features:
            argv += ["--size", str(self.shm_bytes)]
        argv += ["--tmpfs", "/dev/shm"]
        if "--remount-ro" in features:
            argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        argv += ["--chdir", "/tmp", "--", real, "-I", "-S", "-B", "-c", _ZYGOTE_SOURCE, str(ctl_fd), "1"]
        return argv, "/tmp"


# ---------------------------------------------------------------------------------------------
# One sandbox with its fork server
# ---------------------------------------------------------------------------------------------


class _Sandbox:
    """One long-lived sandbox process and the parent's end of its control socket."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.jobs_done = 0
        self.info: dict[str, Any] = {}
        self._tmp_root: str | None = None
        self._zygote_pid = 0  # host pid of the zygote (the bwrap child; the process itself unsandboxed)
        self._cpu_retired = 0.0  # CPU seconds of this slot's earlier, closed sandboxes

    def cpu_seconds(self) -> float:
        """CPU seconds of everything this slot's sandboxes ran (see :meth:`SandboxPool.cpu_seconds`)."""
        return self._cpu_retired + self._cpu_live()[0]

    def _cpu_live(self) -> tuple[float, float]:
        """(CPU of the live zygote and everything it reaped, the part of it that will NOT reach
        this process's RUSAGE_CHILDREN when the sandbox is closed). The outer bwrap (setpriv execs
        it) is our child: its own time reaches RUSAGE_CHILDREN when it is reaped, so it is not
        counted here; the zygote, killed by its parent-death signal, is reaped by nobody we wait
        for. Without bwrap the zygote is our child, and all of its CPU reaches RUSAGE_CHILDREN."""
        if self.proc is None or self.proc.poll() is not None or not self._zygote_pid:
            return 0.0, 0.0
        zygote = _tree_cpu(self._zygote_pid)
        return zygote, (0.0 if self._zygote_pid == self.proc.pid else zygote)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv, workroot = self.spec.command(child_sock.fileno())
            if not workroot:  # unsandboxed: a private directory on the host
                self._tmp_root = tempfile.mkdtemp(prefix="remask-code-")
                workroot = self._tmp_root
            self.workroot = workroot
            self.proc = subprocess.Popen(
                argv, pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                start_new_session=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            )
        finally:
            child_sock.close()
        self.sock = parent_sock
        reply = self._read_reply(deadline=time.monotonic() + 30.0)
        if not reply or not reply.get("ready"):
            err = b""
            try:
                self.proc.kill()
                _, err = self.proc.communicate(timeout=5)
            except (OSError, subprocess.SubprocessError):
                pass
            self.close()
            last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SandboxError("code sandbox failed to start: " + (" | ".join(last) or "no output")
                               + " (needs unprivileged user namespaces; see docs/sandbox.md)")
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.info = reply
        self.jobs_done = 0
        self._zygote_pid = _child_pid(self.proc.pid) if self.spec.isolation != "unsafe-none" else self.proc.pid

    def close(self) -> None:
        """Stop the sandbox: record its CPU, then kill it. The outer process is killed first, so
        the zygote dies by its parent-death signal and its CPU never reaches RUSAGE_CHILDREN twice."""
        self._cpu_retired += self._cpu_live()[1]
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for stream in (self.proc.stderr,):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            self.proc = None
        if self._tmp_root:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None

    @property
    def alive(self) -> bool:
        return self.sock is not None and self.proc is not None and self.proc.poll() is None

    # -- protocol ----------------------------------------------------------------------------
    def _read_reply(self, deadline: float) -> dict[str, Any] | None:
        assert self.sock is not None
        buf = b""
        need = _REPLY.size
        header_done = False
        while True:
            while len(buf) < need:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if not _readable(self.sock.fileno(), remaining):
                    return None
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            if header_done:
                try:
                    return json.loads(buf[_REPLY.size:need])
                except ValueError:
                    return None
            (length,) = _REPLY.unpack(buf[:_REPLY.size])
            need = _REPLY.size + length
            header_done = True

    def run_batch(self, batch: Sequence[tuple[Job, int, Limits]]) -> tuple[list[JobResult | None], bool]:
        """Pipeline ``batch`` (job, id, limits) through this sandbox: every job is sent at once and the
        zygote runs them one after the other, so it never waits for the parent between jobs.

        Returns (results, healthy). A result is None when its job never started (the sandbox died
        earlier in the batch): the pool runs it again elsewhere. healthy False = recycle."""
        assert self.sock is not None and self.proc is not None
        flights: list[_Flight] = []
        healthy = True
        for job, job_id, limits in batch:
            flight = _Flight(job, job_id, limits, self.workroot)
            try:
                self.sock.sendmsg([_FRAME.pack(b"J", job_id, len(flight.data))],
                                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", flight.write_ends))])
                self.sock.sendall(flight.data)
            except OSError:
                flight.abort()
                healthy = False
                break
            flight.sent()
            flights.append(flight)
        results: list[JobResult | None] = [None] * len(batch)
        if not flights:
            return results, False
        by_id = {f.job_id: f for f in flights}
        by_fd = {fd: f for f in flights for fd in f.readers}
        t0 = time.monotonic()
        hard_deadline = t0 + sum(f.limits.timeout_s + 1.0 for f in flights) + 10.0
        # the zygote runs the flights in order: the first unanswered one is running (or about to),
        # and must be answered within its own timeout + grace of the previous answer
        turn_start = t0
        reply_buf = b""
        sock_alive = True
        lost_at: float | None = None
        sock_fd = self.sock.fileno()
        try:
            while any(not f.done for f in flights):
                now = time.monotonic()
                running = next((f for f in flights if f.reply is None), None)
                turn_deadline = (turn_start + running.limits.timeout_s + _GRACE_S) if running and sock_alive else None
                if now >= hard_deadline or (lost_at is not None and now >= lost_at + 2.0):
                    healthy = False
                    break
                if turn_deadline is not None and now >= turn_deadline:
                    healthy = False  # the zygote missed this job's deadline: stopped, hung or busy
                    break
                for f in flights:
                    if not f.done and f.reply is not None and (not f.open_fds or now >= f.drain_deadline):
                        if f.open_fds:
                            healthy = False  # something still holds its pipes after the sweep
                        f.done = True
                    elif not f.done and f.reply is None and not sock_alive and not f.open_fds:
                        f.done = True  # the sandbox died and this job's pipes are closed
                watch = [fd for f in flights if not f.done for fd in f.open_fds]
                if sock_alive and running is not None:
                    watch.append(sock_fd)
                if not watch:
                    continue
                limit = min([hard_deadline] + [f.drain_deadline for f in flights if f.reply is not None and not f.done]
                            + ([lost_at + 2.0] if lost_at is not None else [])
                            + ([turn_deadline] if turn_deadline is not None else []))
                poller = select.poll()
                for fd in watch:
                    poller.register(fd, select.POLLIN)
                ready = [fd for fd, _ in poller.poll(max(0.0, limit - now) * 1000.0)]
                for fd in ready:
                    if fd == sock_fd:
                        chunk = self.sock.recv(1 << 16)
                        if not chunk:
                            sock_alive, healthy = False, False
                            lost_at = time.monotonic()
                            continue
                        reply_buf += chunk
                        while len(reply_buf) >= _REPLY.size:
                            (length,) = _REPLY.unpack(reply_buf[:_REPLY.size])
                            if len(reply_buf) < _REPLY.size + length:
                                break
                            raw, reply_buf = reply_buf[_REPLY.size:_REPLY.size + length], reply_buf[_REPLY.size + length:]
                            try:
                                reply = json.loads(raw)
                            except ValueError:
                                healthy = False
                                continue
                            f = by_id.get(reply.get("id")) if isinstance(reply, dict) else None
                            if f is None or f.reply is not None:
                                healthy = False
                                continue
                            f.reply = reply
                            f.drain_deadline = turn_start = time.monotonic()
                            f.drain_deadline += 2.0
                            if not reply.get("clean", False):
                                healthy = False
                        continue
                    f = by_fd[fd]
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        f.open_fds.discard(fd)
                        continue
                    if f.take(fd, chunk) and f.reply is None and sock_alive:
                        try:
                            self.sock.sendall(_FRAME.pack(b"K", f.job_id, 0))
                        except OSError:
                            healthy = False
        finally:
            for f in flights:
                f.close()
        first_unreplied = True
        for i, f in enumerate(flights):
            if f.reply is None:
                if not first_unreplied and not f.got_bytes:
                    continue  # never started: results[i] stays None
                first_unreplied = False
                f.result.stopped = f.result.stopped or ("timeout" if sock_alive else "sandbox_lost")
            elif f.reply.get("stopped") == "timeout" or str(f.reply.get("stopped", "")).startswith("setup_error"):
                f.result.stopped = str(f.reply["stopped"])
            results[i] = f.finish(time.monotonic() - t0)
        self.jobs_done += len(flights)
        if self.jobs_done >= self.spec.jobs_per_sandbox:
            healthy = False
        return results, healthy


class _Flight:
    """Parent-side state of one job in a pipelined batch."""

    def __init__(self, job: Job, job_id: int, limits: Limits, workroot: str) -> None:
        self.job, self.job_id, self.limits = job, job_id, limits
        rfd = random.randrange(10, min(60, limits.open_files - 1))
        nonce = secrets.token_hex(16) if job.mode == "tests" else ""
        body = dict(job.payload)
        body.update(mode=job.mode, code=job.code, result_fd=rfd, stdin=job.stdin,
                    workdir=f"{workroot}/job{job_id}", timeout_s=limits.timeout_s,
                    limits={"cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                            "file_bytes": limits.file_bytes, "open_files": limits.open_files,
                            "processes": limits.processes})
        if nonce:
            body["nonce"] = nonce
        self.data = json.dumps(body).encode("utf-8", "surrogatepass")
        self.pipes = [os.pipe() for _ in range(3)]
        self.write_ends = [w for _, w in self.pipes]
        self.readers = {self.pipes[0][0]: "stdout", self.pipes[1][0]: "stderr", self.pipes[2][0]: "results"}
        self.open_fds: set[int] = set()
        self.chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": [], "results": []}
        self.kept = {"stdout": 0, "stderr": 0, "results": 0}
        self.keep_cap = {"stdout": limits.output_bytes if job.mode == "io" else limits.keep_stderr_bytes,
                         "stderr": limits.keep_stderr_bytes, "results": limits.output_bytes}
        self.total = 0
        self.got_bytes = False
        self.reply: dict[str, Any] | None = None
        self.drain_deadline = 0.0
        self.done = False
        self.result = JobResult(nonce=nonce)
        self._closed = False

    def sent(self) -> None:
        for w in self.write_ends:
            os.close(w)
        self.write_ends = []
        for r in self.readers:
            os.set_blocking(r, False)
        self.open_fds = set(self.readers)

    def abort(self) -> None:
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
        self._closed = True

    def take(self, fd: int, chunk: bytes) -> bool:
        """Keep ``chunk`` within the caps; True the first time the output limit is passed."""
        self.got_bytes = True
        name = self.readers[fd]
        self.total += len(chunk)
        room = self.keep_cap[name] - self.kept[name]
        if room > 0:
            self.chunks[name].append(chunk[:room])
            self.kept[name] += min(room, len(chunk))
        if self.total > self.limits.output_bytes and self.result.stopped != "output_limit":
            self.result.stopped = "output_limit"
            return True
        return False

    def close(self) -> None:
        if not self._closed:
            for r in self.readers:
                os.close(r)
            self._closed = True

    def finish(self, wall_s: float) -> JobResult:
        result = self.result
        result.stdout = b"".join(self.chunks["stdout"])
        result.stderr = b"".join(self.chunks["stderr"])
        results = b"".join(self.chunks["results"])
        self.chunks.clear()
        if result.stopped != "output_limit" and _json_values(results) > self.limits.result_values:
            result.stopped = "output_limit"  # parsing it could cost many times its size in memory
        if result.stopped != "output_limit":
            result.records = _parse_records(results)
        if self.reply:
            exit_code, sig = self.reply.get("exit"), self.reply.get("signal")
            result.exit = exit_code if type(exit_code) is int else None  # the zygote's waitpid
            result.signal = sig if type(sig) is int else None
        result.wall_s = float(self.reply.get("wall_s", wall_s)) if self.reply else wall_s
        return result


def _json_values(data: bytes) -> int:
    """An upper bound of the number of JSON values (objects, arrays, list items) in ``data``."""
    return data.count(b",") + data.count(b"[") + data.count(b"{")


def _parse_records(data: bytes) -> list[dict[str, Any]]:
    """One JSON object per line; anything else is ignored (a forged or cut line scores nothing)."""
    records = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------


class SandboxPool:
    """``workers`` sandboxes (default :func:`default_workers`); :meth:`run_many` spreads jobs over
    them and returns results in order.

    Sandboxes start lazily (the first call pays about 50 ms each) and are replaced after any
    anomaly. Thread-safe: each sandbox is used by one job at a time.
    """

    def __init__(self, spec: SandboxSpec, limits: Limits, workers: int = 0) -> None:
        self.spec = spec
        self.limits = limits
        self.workers = workers or default_workers()
        self._idle: queue.Queue[_Sandbox] = queue.Queue()
        self._all: list[_Sandbox] = []
        self._lock = threading.Lock()
        self._ids = iter(range(1, 1 << 31))
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._cpu_retired = 0.0
        if spec.isolation == "unsafe-none":
            logger.warning(
                "code reward: running model-generated code WITHOUT a sandbox (isolation: unsafe-none"
                " is set): programs can read and write your files, use the network and kill processes")
        else:
            spec.command(0)  # fail early and clearly when bwrap / an interpreter is missing

    def _acquire(self) -> _Sandbox:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.workers:
                box = _Sandbox(self.spec)
                self._all.append(box)
                return box
        return self._idle.get()

    def _release(self, box: _Sandbox, healthy: bool) -> None:
        if not healthy:
            box.close()
        self._idle.put(box)

    def run(self, job: Job, limits: Limits | None = None) -> JobResult:
        """Run one job on a free sandbox (starting or replacing one when needed)."""
        result = self._run_batch([(job, limits or self.limits)])[0]
        assert result is not None
        return result

    def _run_batch(self, batch: Sequence[tuple[Job, Limits]]) -> list[JobResult | None]:
        if self._closed:
            raise RemaskError("code sandbox pool is closed")
        results: list[JobResult | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        for _attempt in range(3):
            if not todo:
                break
            box = self._acquire()
            healthy = False
            try:
                if not box.alive:
                    box.close()
                    box.start()
                with self._lock:
                    ids = [next(self._ids) for _ in todo]
                got, healthy = box.run_batch([(batch[i][0], jid, batch[i][1]) for i, jid in zip(todo, ids)])
            finally:
                self._release(box, healthy)
            for i, res in zip(todo, got):
                results[i] = res
            todo = [i for i in todo if results[i] is None]  # never started: run them elsewhere
        for i in todo:
            results[i] = JobResult(stopped="sandbox_lost")
        return results

    def run_many(self, jobs: Sequence[Job], limits: Sequence[Limits | None] | None = None) -> list[JobResult]:
        """Run ``jobs`` across the sandboxes; results keep the order.

        Jobs go out in small pipelined batches (at most 8) that idle sandboxes take one after the
        other. A batch holds every C-th job (C = the number of batches), not C neighbours, so the
        slow programs of one row (all of its timing-out cases, say) do not queue behind each other
        in one zygote while the other sandboxes idle."""
        if not jobs:
            return []
        lims = [l or self.limits for l in (limits if limits is not None else [None] * len(jobs))]
        pairs = list(zip(jobs, lims))
        size = max(1, min(8, len(pairs) // (4 * self.workers)))
        count = -(-len(pairs) // size)
        order = [i for c in range(count) for i in range(c, len(pairs), count)]
        chunks = [[pairs[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
        if len(chunks) == 1 or self.workers == 1:
            flat = [r for chunk in chunks for r in self._run_batch(chunk)]
        else:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="remask-code")
            flat = [r for rs in self._executor.map(self._run_batch, chunks) for r in rs]
        out: list[JobResult | None] = [None] * len(pairs)
        for i, r in zip(order, flat):
            out[i] = r
        return [r if r is not None else JobResult(stopped="sandbox_lost") for r in out]

    def cpu_seconds(self) -> float:
        """CPU seconds spent inside this pool's sandboxes so far: every zygote and everything it
        reaped (the jobs, their children, the sweeps and wipes), across recycled sandboxes, read
        from ``/proc/<pid>/stat`` (utime + stime + cutime + cstime). Disjoint from this process's
        ``getrusage(RUSAGE_SELF)`` and, for closed sandboxes, from ``RUSAGE_CHILDREN``, which
        receives only the outer bwrap processes' own (idle) time when they are reaped. So the
        whole cost of scoring is RUSAGE_SELF + RUSAGE_CHILDREN + this. Without bwrap
        (``unsafe-none``) the zygotes are our children and reach RUSAGE_CHILDREN when closed."""
        with self._lock:
            boxes = list(self._all)
        return self._cpu_retired + sum(box.cpu_seconds() for box in boxes)

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for box in self._all:
            box.close()
            self._cpu_retired += box.cpu_seconds()
        self._all.clear()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            for box in self._all:
                box.close()
        except Exception:  # noqa: BLE001
            pass


def default_workers() -> int:
    """Two sandboxes per usable core (at most 32): a trivial program costs well under a millisecond
    of CPU but passes through several processes, so a second sandbox per core hides the hand-offs."""
    return min(32, 2 * _usable_cores())


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _readable(fd: int, timeout_s: float) -> bool:
    """True when ``fd`` is readable within ``timeout_s`` (poll: any fd number, unlike select)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000.0))


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_times(pid: int) -> list[int]:
    """utime, stime, cutime, cstime (clock ticks) from ``/proc/<pid>/stat``; zeros when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return [int(x) for x in fields[11:15]]  # fields 14-17 of proc(5), counted after the name
    except (OSError, IndexError, ValueError):
        return [0, 0, 0, 0]


def _tree_cpu(pid: int) -> float:
    """CPU of ``pid`` and of every descendant it has reaped."""
    return sum(_stat_times(pid)) / _TICK


def _child_pid(pid: int) -> int:
    """The (single) child of ``pid``: bwrap's sandboxed process, i.e. the zygote. 0 if none."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = fh.read().split()
        if kids:
            return int(kids[0])
    except (OSError, ValueError):
        pass
    for entry in os.listdir("/proc"):  # kernels without the children file
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        return int(entry)
            except (OSError, IndexError, ValueError):
                continue
    return 0
