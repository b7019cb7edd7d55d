"""Tables and plots of a comparison: ``report.md`` plus PNGs, from plain result dictionaries.

Inputs are the JSON-able records :mod:`remask.harness.compare` writes for every (pipeline, seed)
run; nothing here trains or evaluates, so a report can be rebuilt from a finished output directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import confidence_interval, mean_std

__all__ = ["summary_rows", "markdown_table", "write_plots", "fmt_ci"]


def fmt_ci(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± sample std`` over seeds, with the 95% Student-t half-width in brackets when there
    are at least two seeds (just the mean for one)."""
    vals = [v * scale for v in values if v == v]  # drop NaN
    if not vals:
        return "–"
    m, s = mean_std(vals)
    if len(vals) < 2:
        return f"{m:.{digits}f}"
    _, h = confidence_interval(vals)
    return f"{m:.{digits}f} ± {s:.{digits}f} [{h:.{digits}f}]"


def summary_rows(runs: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> list[dict[str, str]]:
    """One row per pipeline: every metric as mean ± 95% CI over its seeds."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_name.setdefault(r["pipeline"], []).append(r)
    rows = []
    for name, rs in by_name.items():
        ev = [r["eval"] for r in rs]
        row = {
            "pipeline": name,
            "seeds": str(len(rs)),
            "greedy acc %": fmt_ci([e["greedy_accuracy"] for e in ev], 100),
        }
        for k in ks:
            row[f"pass@{k} %"] = fmt_ci([e["pass_at_k"].get(str(k), e["pass_at_k"].get(k, float("nan"))) for e in ev], 100)
        row["distinct correct"] = fmt_ci([e["distinct_correct"] for e in ev], 1, 2)
        row["mean reward"] = fmt_ci([e["mean_reward"] for e in ev], 1, 3)
        row["length"] = fmt_ci([e["mean_length"] for e in ev], 1, 1)
        row["train steps"] = fmt_ci([r["train"]["steps"] for r in rs], 1, 0)
        row["train fwd passes"] = fmt_ci([r["train"]["forward_passes"] for r in rs], 1, 0)
        row["train s"] = fmt_ci([r["train"]["seconds"] for r in rs], 1, 0)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return "_no runs_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _curves(runs: Sequence[Mapping[str, Any]], x_key: str) -> dict[str, list[tuple[list[float], list[float]]]]:
    out: dict[str, list[tuple[list[float], list[float]]]] = {}
    for r in runs:
        hist = r["train"].get("history", [])
        if not hist:  # the untrained base has no training curve
            continue
        xs = [h[x_key] for h in hist if x_key in h and "train/reward" in h]
        ys = [h["train/reward"] for h in hist if x_key in h and "train/reward" in h]
        out.setdefault(r["pipeline"], []).append((xs, ys))
    return out


def write_plots(runs: Sequence[Mapping[str, Any]], out_dir: Path, ks: Sequence[int]) -> list[Path]:
    """reward vs step, reward vs forward passes, pass@k curves, distinct correct; returns the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for x_key, fname, xlabel in (("step", "reward_vs_step.png", "optimizer step"),
                                 ("forward_passes", "reward_vs_forward_passes.png", "model forward passes (cumulative)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (name, curves) in enumerate(_curves(runs, x_key).items()):
            for j, (xs, ys) in enumerate(curves):
                ax.plot(xs, ys, color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("train/reward")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        paths.append(out_dir / fname)

    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_name.setdefault(r["pipeline"], []).append(r)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, rs) in enumerate(by_name.items()):
        means = []
        for k in ks:
            vals = [r["eval"]["pass_at_k"].get(str(k), r["eval"]["pass_at_k"].get(k)) for r in rs]
            means.append(100 * sum(vals) / len(vals))
        ax.plot(list(ks), means, marker="o", color=f"C{i}", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "pass_at_k.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "pass_at_k.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(by_name)
    vals = [[r["eval"]["distinct_correct"] for r in by_name[n]] for n in names]
    ax.bar(range(len(names)), [sum(v) / len(v) for v in vals], color=[f"C{i}" for i in range(len(names))])
    for i, v in enumerate(vals):
        ax.scatter([i] * len(v), v, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("distinct correct completions per prompt")
    fig.tight_layout()
    fig.savefig(out_dir / "diversity.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "diversity.png")
    return paths
