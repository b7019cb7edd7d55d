"""Tables and plots of a comparison: ``report.md`` plus PNGs, from plain result dictionaries.

Inputs are the JSON-able records :mod:`remask.harness.compare` writes for every (pipeline, seed)
run; nothing here trains or evaluates, so a report can be rebuilt from a finished output directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import confidence_interval, mean_std

__all__ = ["summary_rows", "paired_rows", "markdown_table", "write_plots", "fmt_ci", "fmt_difference", "pipeline_colours",
           "BASE_LABEL"]

#: the pipeline label of the untrained base model's evaluation runs
BASE_LABEL = "base (untrained)"


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


def fmt_difference(values: Sequence[float], digits: int = 1) -> str:
    """A paired difference: ``mean ± sample std, 95% CI [lo, hi]`` (signed), just the mean for one pair."""
    vals = [v for v in values if v == v]
    if not vals:
        return "–"
    m, s = mean_std(vals)
    m = round(m, digits) + 0.0  # no "-0.0" for a difference that rounds to zero
    if len(vals) < 2:
        return f"{m:+.{digits}f}"
    _, h = confidence_interval(vals)
    return f"{m:+.{digits}f} ± {s:.{digits}f}, CI [{m - h:+.{digits}f}, {m + h:+.{digits}f}]"


def paired_rows(runs: Sequence[Mapping[str, Any]], reference: str) -> list[dict[str, str]]:
    """Every other pipeline against ``reference``, paired by seed.

    A seed fixes the data order, the initial weights and the evaluation draws, so the per-seed
    difference removes what the two runs share; the 95% Student-t interval of the mean difference
    says whether a gap (or an equality margin, "within 3 points") is resolved by these seeds. Train
    time is the mean per-seed ratio (only when the reference trained)."""
    by = _by_pipeline(runs)
    ref = {r["seed"]: r for r in by.get(reference, [])}
    rows = []
    for name, rs in by.items():
        if name == reference:
            continue
        pairs = [(r, ref[r["seed"]]) for r in rs if r["seed"] in ref]
        acc = [100 * (a["eval"]["greedy_accuracy"] - b["eval"]["greedy_accuracy"]) for a, b in pairs]
        p1 = [100 * (_pass_at(a["eval"], 1) - _pass_at(b["eval"], 1)) for a, b in pairs]
        ratio = [a["train"]["seconds"] / b["train"]["seconds"] for a, b in pairs
                 if b.get("train", {}).get("seconds") and a.get("train", {}).get("seconds")]
        rows.append({
            "pipeline": name,
            "paired seeds": str(len(pairs)),
            "Δ greedy accuracy (points)": fmt_difference(acc),
            "Δ pass@1 (points)": fmt_difference(p1),
            "train s ratio": fmt_ci(ratio, 1, 2) if ratio else "–",
        })
    return rows


def _pass_at(ev: Mapping[str, Any], k: int) -> float:
    at = ev.get("pass_at_k") or {}
    return float(at.get(str(k), at.get(k, float("nan"))))


def summary_rows(runs: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> list[dict[str, str]]:
    """One row per pipeline: every metric as mean ± 95% CI over its seeds."""
    rows = []
    for name, rs in _by_pipeline(runs).items():
        ev = [r["eval"] for r in rs]
        row = {
            "pipeline": name,
            "seeds": str(len(rs)),
            "greedy accuracy %": fmt_ci([e["greedy_accuracy"] for e in ev], 100),
        }
        for k in ks:
            row[f"pass@{k} %"] = fmt_ci([_pass_at(e, k) for e in ev], 100)
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


def pipeline_colours(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One colour per pipeline, the same in every plot, in order of appearance, never two pipelines
    in one colour: matplotlib's 10-colour cycle up to 10 pipelines, ``tab20`` up to 20 (dark shades
    first, then light), then evenly
    spaced hues of ``turbo``."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    names = list(dict.fromkeys(r["pipeline"] for r in runs))
    n = len(names)
    if n <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    if n <= 20:
        tab20 = colormaps["tab20"]
        # the ten dark shades first, then their light partners, so neighbours in the legend differ most
        return {name: to_hex(tab20(2 * i if i < 10 else 2 * (i - 10) + 1)) for i, name in enumerate(names)}
    turbo = colormaps["turbo"]
    return {name: to_hex(turbo(i / (n - 1))) for i, name in enumerate(names)}


def _by_pipeline(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["pipeline"], []).append(r)
    return out


def _aligned_curves(rs: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[list[float], list[list[float]]]:
    """Seeds of one pipeline aligned by optimizer step: x (mean over seeds) and one y column per step,
    cut to the shortest seed so every point averages the same seeds."""
    curves = []
    for r in rs:
        hist = [h for h in r["train"].get("history", []) if x_key in h and y_key in h and h[y_key] == h[y_key]]
        if hist:
            curves.append(hist)
    if not curves:
        return [], []
    n = min(len(c) for c in curves)
    xs = [sum(float(c[i][x_key]) for c in curves) / len(curves) for i in range(n)]
    ys = [[float(c[i][y_key]) for c in curves] for i in range(n)]
    return xs, ys


def _integer_axis(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def write_plots(runs: Sequence[Mapping[str, Any]], out_dir: Path, ks: Sequence[int]) -> list[Path]:
    """reward vs step, reward vs forward passes, pass@k curves, distinct correct; returns the PNGs.

    One colour per pipeline in every plot (:func:`pipeline_colours`); several seeds are drawn as
    their mean with a shaded band of the 95% Student-t confidence interval of the mean (training
    curves) or error bars of the same interval (pass@k), and as one marker per seed (diversity).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    colours = pipeline_colours(runs)
    by_name = _by_pipeline(runs)
    seeds = sorted({r["seed"] for r in runs})
    band = f"line: mean of {len(seeds)} seeds; band: 95% CI of the mean" if len(seeds) > 1 else "one seed"
    paths = []
    for x_key, fname, xlabel in (("step", "reward_vs_step.png", "optimizer step"),
                                 ("forward_passes", "reward_vs_forward_passes.png",
                                  "model forward passes, cumulative (sampling + losses)")):
        fig, ax = plt.subplots(figsize=(8, 4.2))
        for name, rs in by_name.items():
            xs, ys = _aligned_curves(rs, x_key, "train/reward")
            if not xs:  # the untrained base has no training curve
                continue
            stats = [confidence_interval(col) for col in ys]
            mean = [m for m, _ in stats]
            ax.plot(xs, mean, color=colours[name], lw=1.4, label=name)
            if len(ys[0]) > 1:
                lo = [m - h for m, h in stats]
                hi = [m + h for m, h in stats]
                ax.fill_between(xs, lo, hi, color=colours[name], alpha=0.18, lw=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("train reward (mean over the batch's completions)")
        ax.set_title(f"Training reward ({band})", fontsize=9)
        _integer_axis(ax.xaxis)
        ax.legend(title="pipeline", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        paths.append(out_dir / fname)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    offsets = {name: (i - (len(by_name) - 1) / 2) * 0.04 for i, name in enumerate(by_name)}
    for name, rs in by_name.items():
        means, halves = [], []
        for k in ks:
            vals = [100 * float(r["eval"]["pass_at_k"].get(str(k), r["eval"]["pass_at_k"].get(k, float("nan"))))
                    for r in rs]
            m, h = confidence_interval([v for v in vals if v == v])
            means.append(m)
            halves.append(h if h == h else 0.0)
        xs = [k * (1 + offsets[name]) for k in ks]  # a small horizontal dodge so error bars do not overlap
        ax.errorbar(xs, means, yerr=halves if len(rs) > 1 else None, marker="o", ms=4, capsize=3,
                    color=colours[name], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k (% of problems)")
    ax.set_title("pass@k, sampled at the sampler's temperature" + (
        f" (mean of {len(seeds)} seeds ± 95% CI)" if len(seeds) > 1 else ""), fontsize=9)
    ax.legend(title="pipeline", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "pass_at_k.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "pass_at_k.png")

    fig, ax = plt.subplots(figsize=(6, 4.2))
    names = list(by_name)
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for i, name in enumerate(names):
        vals = [float(r["eval"]["distinct_correct"]) for r in by_name[name]]
        vals_ok = [v for v in vals if v == v]
        ax.bar(i, sum(vals_ok) / len(vals_ok) if vals_ok else 0.0, color=colours[name], alpha=0.75)
        for r, v in zip(by_name[name], vals):
            m = markers[seeds.index(r["seed"]) % len(markers)]
            ax.scatter([i + 0.12 * (seeds.index(r["seed"]) - (len(seeds) - 1) / 2)], [v], marker=m, color="black",
                       s=18, zorder=3, label=f"seed {r['seed']}" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("distinct correct completions per prompt (count)")
    ax.set_title("Diversity of correct samples (bar: mean over seeds)", fontsize=9)
    if len(seeds) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out_dir / "diversity.png", dpi=110)
    plt.close(fig)
    paths.append(out_dir / "diversity.png")
    return paths
