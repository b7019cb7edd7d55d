"""The run directory: who may write it, whether a new run may start in it, and what a resumed run
finds there.

* A new run refuses a non-empty ``train.output_dir`` unless it resumes (``--resume``) or was told to
  start over (``--overwrite`` / ``train.overwrite_output_dir``), which first deletes what an earlier
  run wrote there (checkpoints, logs, tables) and nothing else — so checkpoint rotation can never
  delete the new run's checkpoints in favour of an old run's higher-numbered ones.
* The main process holds an exclusive ``fcntl.flock`` on ``.remask.lock`` (holding its pid) for the
  whole run; a second run in the same directory is refused, naming the holder.
* ``metrics.jsonl`` is cut back to the resumed step, tolerating a torn last line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import RemaskError
from .reporting import flat_config

__all__ = ["changed_settings", "truncate_metrics", "RESUMABLE", "LOCK_NAME", "RUN_ENTRIES", "RunDirLock",
           "check_output_dir", "clear_previous_run"]

log = logging.getLogger("remask.engine")

#: the lock file of a run directory (ignored when deciding whether the directory is empty)
LOCK_NAME = ".remask.lock"

#: what a run writes into its directory (``--overwrite`` deletes exactly these)
RUN_ENTRIES = ("metrics.jsonl", "manifest.json", "config.yaml", "completions", "tensorboard")
_CHECKPOINT_PREFIXES = ("checkpoint-", ".tmp-checkpoint-", ".old-checkpoint-")


def _where(output_dir: Path) -> str:
    return f"train.output_dir {output_dir}"


def check_output_dir(output_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an output directory that a new run may not use (one line each, exit 2); writes nothing."""
    if output_dir.exists() and not output_dir.is_dir():
        raise RemaskError(f"{_where(output_dir)}: exists and is not a directory")
    if not output_dir.is_dir() or resume or overwrite:
        return
    held = sorted(p.name for p in output_dir.iterdir() if p.name != LOCK_NAME)
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise RemaskError(f"{_where(output_dir)} is not empty (holds {shown}); pass --resume to continue that run, "
                          "--overwrite to delete its checkpoints and logs and start over, or choose another directory")


def clear_previous_run(output_dir: Path) -> list[str]:
    """Delete what an earlier run wrote into ``output_dir`` (``--overwrite``); other files stay."""
    removed = []
    if not output_dir.is_dir():
        return removed
    for p in sorted(output_dir.iterdir()):
        if p.name in RUN_ENTRIES or p.name.startswith(_CHECKPOINT_PREFIXES):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
    if removed:
        log.warning("--overwrite: deleted %s from %s", ", ".join(removed), output_dir)
    return removed


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``output_dir/.remask.lock`` held for a whole run."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        import fcntl

        directory = self.path.parent
        if directory.exists() and not directory.is_dir():
            raise RemaskError(f"{_where(directory)}: exists and is not a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except NotADirectoryError:
            raise RemaskError(f"{_where(directory)}: a part of the path is not a directory") from None
        except OSError as exc:
            raise RemaskError(f"{_where(directory)}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RemaskError(f"{_where(directory)} is in use by another remask run (pid {holder}); wait for it "
                                  "to finish or choose another directory") from None
            raise RemaskError(f"{_where(directory)}: cannot lock {self.path.name} ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


#: settings that may change between a run and its resumption without a warning
RESUMABLE = ("train.max_steps", "train.output_dir", "train.save_steps", "train.save_total_limit",
             "train.logging_steps", "train.log_completions", "train.progress", "train.report_to",
             "train.overwrite_output_dir", "train.torch_threads")


def changed_settings(saved: Any, current: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every setting that differs from the checkpoint's config."""
    if not isinstance(saved, dict):
        return []
    old, new = flat_config(saved), flat_config(current)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if old.get(k) != new.get(k) and not k.startswith(RESUMABLE) and not k.startswith("eval.")]


def truncate_metrics(path: Path, step: int) -> int:
    """Drop logged lines after ``step`` (written by a run that died after its last checkpoint) and
    lines that are not JSON (a line torn by a kill or a full disk). Returns how many were dropped."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += bool(line.strip())
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
        else:
            dropped += 1
    path.write_text("".join(line + "\n" for line in keep))
    return dropped

