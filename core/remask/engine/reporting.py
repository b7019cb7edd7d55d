"""What a run leaves beside its weights: manifest, TensorBoard scalars, completions tables, console.

* ``manifest.json`` and ``config.yaml`` at start: the resolved config, package versions
  (:func:`remask.environment.env_info`), git revision, device and process layout, the sampler settings;
* TensorBoard through accelerate's trackers, with TRL's metric names (``train/reward``, ...);
* ``completions/completions_<step>.parquet`` every log step (prompt, completion, reward and its
  components, advantage), and a few of them printed with rich;
* ``metrics.jsonl``: every logged dict, one line per log step (easy to read back in tests/notebooks).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["git_revision", "write_manifest", "flat_config", "RunReporter", "format_duration", "reward_metrics",
           "completion_metrics", "combine_rounds"]

log = logging.getLogger("remask.engine")


def format_duration(seconds: float) -> str:
    """``83.2`` -> ``"1m23s"``; ``4000`` -> ``"1h06m40s"``."""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


def git_revision(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git work tree holding ``start`` (default: the remask sources)."""
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def flat_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"objective.beta": 0.04, ...}`` with TensorBoard-safe values."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            out.update(flat_config(v, f"{prefix}{k}."))
    elif isinstance(data, (list, tuple)):
        out[prefix[:-1]] = json.dumps(data, sort_keys=True)  # key order is not a setting
    elif data is None:
        out[prefix[:-1]] = "None"
    else:
        out[prefix[:-1]] = data
    return out


def write_manifest(output_dir: Path, *, config: Mapping[str, Any], command: str, extra: Mapping[str, Any]) -> Path:
    """``manifest.json``: everything needed to tell two runs apart (see spec ecosystem.md §B.8)."""
    import yaml

    from ..environment import env_info

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    manifest = {
        "command": command,
        "argv": sys.argv,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "versions": env_info(),
        "sampler": dict(config.get("sampler", {})),
        "config": dict(config),
        **extra,
    }
    path = output_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def _mean(values: torch.Tensor) -> float:
    v = values.float()
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else float("nan")


def reward_metrics(total: torch.Tensor, components: Mapping[str, torch.Tensor], group_ids: torch.Tensor) -> dict[str, float]:
    """TRL's reward metrics over a whole (gathered) batch: ``reward``, ``reward_std`` (mean of the
    per-group standard deviations), ``rewards/<name>/mean|std``, ``frac_reward_zero_std``."""
    out: dict[str, float] = {"reward": _mean(total)}
    _, inverse = torch.unique(group_ids, return_inverse=True)
    stds, zero = [], 0
    for g in range(int(inverse.max()) + 1 if inverse.numel() else 0):
        r = total[inverse == g].float()
        s = float(r.std()) if r.numel() > 1 else 0.0
        stds.append(s)
        zero += int(s == 0.0 or math.isnan(s))
    out["reward_std"] = sum(stds) / len(stds) if stds else 0.0
    out["frac_reward_zero_std"] = zero / len(stds) if stds else 0.0
    for name, vals in components.items():
        out[f"rewards/{name}/mean"] = _mean(vals)
        v = vals.float()[~torch.isnan(vals.float())]
        out[f"rewards/{name}/std"] = float(v.std()) if v.numel() > 1 else 0.0
    return out


def completion_metrics(lengths: torch.Tensor, terminated: torch.Tensor) -> dict[str, float]:
    """TRL's completion-length metrics. lengths ``[B]`` (through first EOS), terminated ``[B]`` bool."""
    lf = lengths.float()
    out = {
        "completions/mean_length": float(lf.mean()),
        "completions/min_length": float(lf.min()),
        "completions/max_length": float(lf.max()),
        "completions/clipped_ratio": float((~terminated).float().mean()),
    }
    term = lf[terminated]
    out["completions/mean_terminated_length"] = float(term.mean()) if term.numel() else 0.0
    out["completions/min_terminated_length"] = float(term.min()) if term.numel() else 0.0
    out["completions/max_terminated_length"] = float(term.max()) if term.numel() else 0.0
    return out


class RunReporter:
    """Main-process sink for scalars, completions tables and the console."""

    def __init__(self, output_dir: Path, *, accelerator: Any, is_main: bool, trackers: bool,
                 config: Mapping[str, Any] | None, print_completions: int, resumed_step: int = 0) -> None:
        self.output_dir = output_dir
        self.accelerator = accelerator
        self.is_main = is_main
        self.trackers = trackers
        self.print_completions = print_completions
        self.metrics_path = output_dir / "metrics.jsonl"
        if trackers:
            # One TensorBoard run per run directory: the config goes in as text, because
            # `add_hparams` writes a second, otherwise empty run into a timestamped subdirectory.
            # On resume, `purge_step` hides what the killed run logged after its checkpoint, so
            # no step appears twice.
            kwargs = {"tensorboard": {"purge_step": resumed_step + 1}} if resumed_step else {}
            accelerator.init_trackers("tensorboard", config=None, init_kwargs=kwargs)
            if is_main and config:
                import yaml

                writer = accelerator.get_tracker("tensorboard", unwrap=True)
                text = yaml.safe_dump(dict(config), sort_keys=False)
                writer.add_text("config", "    " + text.replace("\n", "\n    "), global_step=resumed_step)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.trackers:
            self.accelerator.log(clean, step=step)
        if self.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps({"step": step, **{k: (None if math.isnan(v) else v) for k, v in clean.items()}}) + "\n")

    def completions(self, step: int, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write the table of this log step and print the first few rows."""
        if not self.is_main or not rows:
            return None
        folder = self.output_dir / "completions"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"completions_{step:05d}.parquet"
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = {k: [r.get(k) for r in rows] for k in rows[0]}
            pq.write_table(pa.table(columns), str(path))
        except Exception as exc:  # noqa: BLE001 - fall back to JSON lines
            path = folder / f"completions_{step:05d}.jsonl"
            with open(path, "w") as f:
                for r in rows:
                    f.write(json.dumps(r, default=str) + "\n")
            log.debug("parquet unavailable (%s); wrote %s", exc, path)
        if self.print_completions:
            self._print(step, rows[: self.print_completions])
        return path

    def _print(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"step {step}: sample completions", show_lines=False)
        for col in ("prompt", "completion", "reward", "advantage"):
            table.add_column(col, overflow="fold", max_width=60 if col in ("prompt", "completion") else 12)
        for r in rows:
            table.add_row(str(r["prompt"])[-200:], str(r["completion"])[:400], f"{r['reward']:.3f}",
                          f"{r['advantage']:.3f}")
        console = Console(stderr=True)
        console.print()  # start below the progress bar's line
        console.print(table)

    def close(self) -> None:
        if self.trackers:
            self.accelerator.end_training()


#: metrics logged as their latest value (the others are averaged over the rounds of a log interval)
_LATEST = ("train/learning_rate", "train/epoch", "train/skipped_steps", "train/num_tokens")
_SUMMED = ("train/reward_errors",)


def combine_rounds(rounds: list[dict[str, float]]) -> dict[str, float]:
    """One log line for the rounds since the last one: means (NaN ignored), sums or latest values."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for r in rounds for k in r):
        values = [r[key] for r in rounds if key in r]
        if key in _LATEST or key.endswith("_slowest_rank"):
            out[key] = values[-1]
        elif key in _SUMMED:
            out[key] = float(sum(values))
        else:
            finite = [v for v in values if not math.isnan(v)]
            out[key] = sum(finite) / len(finite) if finite else float("nan")
    return out
