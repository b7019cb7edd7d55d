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

__all__ = ["env_info", "package_version", "REPORTED_PACKAGES"]

#: distributions whose versions a bug report and a run manifest name
REPORTED_PACKAGES = ("remask", "torch", "transformers", "peft", "accelerate", "pluggy", "pydantic", "datasets",
                     "math-verify", "tensorboard")


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


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
        info["torch_threads"] = torch.get_num_threads()
    except Exception as exc:  # noqa: BLE001 - a bug report must print even with a broken torch
        info["device"] = f"unknown ({exc})"
    from .registry import get_registry

    plugins: dict[str, set[str]] = {}
    for c in get_registry().components():
        plugins.setdefault(f"{c.distribution} {c.version}", set()).add(c.plugin)
    info["plugins"] = {k: sorted(v) for k, v in sorted(plugins.items())}
    return info
