"""The run directory between runs: what a resumed run may change, and ``metrics.jsonl`` after a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .reporting import flat_config

__all__ = ["changed_settings", "truncate_metrics", "RESUMABLE"]


#: settings that may change between a run and its resumption without a warning
RESUMABLE = ("train.max_steps", "train.output_dir", "train.save_steps", "train.save_total_limit",
              "train.logging_steps", "train.log_completions", "train.progress", "train.report_to")


def changed_settings(saved: Any, current: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every setting that differs from the checkpoint's config."""
    if not isinstance(saved, dict):
        return []
    old, new = flat_config(saved), flat_config(current)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if old.get(k) != new.get(k) and not k.startswith(RESUMABLE) and not k.startswith("eval.")]


def truncate_metrics(path: Path, step: int) -> None:
    """Drop logged lines after ``step`` (written by a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))

