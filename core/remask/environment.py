"""What machine and software a run used: package versions, device, torch threads, plugins.

Shared by ``remask env``, every run manifest (:mod:`remask.engine.reporting`) and the comparison
harness, so it lives below all three: this module imports nothing from the CLI, the engine or the
harness.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["env_info", "package_version", "REPORTED_PACKAGES", "available_cores", "default_torch_threads",
           "set_torch_threads", "namespace_shadowing", "busy_machine"]

#: distributions whose versions a bug report and a run manifest name
REPORTED_PACKAGES = ("remask", "torch", "transformers", "peft", "accelerate", "pluggy", "pydantic", "datasets",
                     "math-verify", "tensorboard")


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_torch_threads() -> tuple[int, str]:
    """torch's intra-op thread count for one process, and why: ``OMP_NUM_THREADS`` when set, else the
    available cores divided by the processes on this machine (``LOCAL_WORLD_SIZE``, set by
    ``accelerate launch`` / ``torchrun``), at least 1. torch's own default (all physical cores in every
    process) oversubscribes a shared or multi-process CPU."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    procs = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, available_cores() // procs), f"{available_cores()} cores / {procs} local process(es)"


def set_torch_threads(requested: int | None) -> tuple[int, str]:
    """Set torch's intra-op threads to ``requested`` (``train.torch_threads``) or the default; returns
    the count and where it came from."""
    import torch

    threads, why = (requested, "train.torch_threads") if requested else default_torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads, why


def namespace_shadowing() -> str | None:
    """What is wrong when ``remask`` imported as a namespace package, else None.

    A ``remask/`` directory without ``__init__.py`` on ``sys.path`` (a checkout named ``remask``
    when ``python`` runs from its parent, say) wins over an editable install; its submodules still
    import, but ``remask`` itself is empty and every plugin fails on ``remask.hookimpl``."""
    import remask

    if getattr(remask, "__file__", None) is None:
        where = ", ".join(str(p) for p in getattr(remask, "__path__", []))
        return (f"`remask` resolves to the namespace package {where}, not the installed package: a directory "
                "named remask/ in the current directory (or on PYTHONPATH) shadows it; run from another directory")
    return None


def busy_machine(threads: int) -> str | None:
    """A warning when other work already keeps this machine's cores busy (1-minute load average at
    least the available cores) and a run is about to use more than one thread per process."""
    if threads <= 1 or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], available_cores()
    if load < cores:
        return None
    return (f"the machine is busy (load average {load:.1f} on {cores} cores) and each process uses {threads} torch "
            "threads; on a shared CPU one thread can be several times faster (benchmarks/torch_threads.py): "
            "set train.torch_threads: 1 or OMP_NUM_THREADS=1")


def env_info() -> dict[str, Any]:
    """Versions, device and torch thread count (also written into every run manifest)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for pkg in REPORTED_PACKAGES:
        info[pkg] = package_version(pkg)
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = f"cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
        else:
            info["device"] = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
        threads, why = default_torch_threads()
        info["torch_threads"] = f"{torch.get_num_threads()} now; a run uses {threads} ({why}) unless train.torch_threads is set"
    except Exception as exc:  # noqa: BLE001 - a bug report must print even with a broken torch
        info["device"] = f"unknown ({exc})"
    from .registry import get_registry

    plugins: dict[str, set[str]] = {}
    for c in get_registry().components():
        plugins.setdefault(f"{c.distribution} {c.version}", set()).add(c.plugin)
    info["plugins"] = {k: sorted(v) for k, v in sorted(plugins.items())}
    return info
