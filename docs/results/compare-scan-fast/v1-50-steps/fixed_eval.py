"""Held-out accuracy of every run of examples/compare-scan-fast.yaml under ONE evaluation sampler, and the
curves of the report that `remask compare` does not draw.

`remask compare` evaluates each pipeline with its own sampler class (plus the spec's `eval.sampler`
overrides), so the two llada pipelines are evaluated with llada, no cache, greedy, but the fast-dllm
pipeline with fast-dllm. This script evaluates the final checkpoints of the fast-dllm runs again with the
llada protocol (`remask eval` of the base pipeline, the spec's eval section, `cache: none`), and one
llada-dual run as a check that this path gives the number `remask compare` gave. Then it writes
fixed_eval.json, fixed_eval.md (accuracy per pipeline, mean ± std [95% CI] over seeds, and the per-seed
difference to the llada anchor, paired by seed) and two plots: train reward against training wall
seconds, and the fraction of prompt groups whose rewards were all equal (no GRPO signal) per step.

    OMP_NUM_THREADS=1 python docs/results/compare-scan-fast/fixed_eval.py \
        --out runs/compare-scan-fast runs/compare-scan-fast-uncapped

(the second directory: the addendum spec uncapped/spec.yaml, same protocol; its runs are merged in).

Run it with the same code as the comparison (the report says which commit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from remask.harness.metrics import confidence_interval
from remask.harness.report import fmt_ci, pipeline_colours

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SPEC = ROOT / "examples" / "compare-scan-fast.yaml"
ANCHOR = "llada"
CHECK = ("llada-dual", 0)  # re-evaluated too: must reproduce remask compare's number


def fixed_protocol_args(spec_eval: dict) -> list[str]:
    args = ["--eval.split", str(spec_eval["split"]), "--eval.limit", str(spec_eval["limit"]),
            "--eval.batch_size", str(spec_eval["batch_size"]),
            "--eval.samples_per_prompt", str(spec_eval["samples_per_prompt"])]
    for key, value in spec_eval.get("sampler", {}).items():
        args += [f"--eval.sampler.{key}", str(value)]
    return args


def re_evaluate(run_dir: Path, spec_eval: dict) -> dict:
    """`remask eval` of the base pipeline (llada sampler) on the run's final checkpoint."""
    out = run_dir / "eval-fixed"
    if not (out / "eval.json").exists():
        ckpt = max(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        cmd = ["remask", "eval", str(ROOT / "examples" / "tiny-scan-grpo.yaml"), "--checkpoint", str(ckpt),
               "--out", str(out), *fixed_protocol_args(spec_eval)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads((out / "eval.json").read_text())["results"][0]


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main() -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", nargs="+", required=True,
                        help="the comparisons' output directories (each holds results.json and runs/)")
    args = parser.parse_args()
    spec_eval = yaml.safe_load(SPEC.read_text())["eval"]
    runs, run_dirs = [], {}
    for out in map(Path, args.out):
        for r in json.loads((out / "results.json").read_text()):
            key = (r["pipeline"], r["seed"])
            if key in run_dirs:  # the untrained base, evaluated by each comparison: keep the first
                continue
            runs.append(r)
            run_dirs[key] = out / "runs" / r["pipeline"].split(" ")[0] / f"seed-{r['seed']}"
    fixed: list[dict] = []
    for r in runs:
        run_dir = run_dirs[(r["pipeline"], r["seed"])]
        own = r["eval"]
        row = {"pipeline": r["pipeline"], "seed": r["seed"], "own_sampler": own["sampler"]["name"],
               "own_greedy_accuracy": own["greedy_accuracy"], "train_seconds": r["train"]["seconds"],
               "train_steps": r["train"]["steps"], "train_forward_passes": r["train"]["forward_passes"]}
        own_is_fixed = own["sampler"]["name"] == "llada" and own["sampler"]["cache"] == "none"
        if not own_is_fixed or (r["pipeline"], r["seed"]) == CHECK:
            again = re_evaluate(run_dir, spec_eval)
            assert again["sampler"]["name"] == "llada" and again["sampler"]["cache"] == "none"
            row["fixed_sampler"] = again["sampler"]
            row["fixed_greedy_accuracy"] = again["greedy_accuracy"]
            row["fixed_pass_at_1"] = again["pass_at_k"]["1"]
            if (r["pipeline"], r["seed"]) == CHECK and again["greedy_accuracy"] != own["greedy_accuracy"]:
                sys.exit(f"fixed_eval: {CHECK}: remask eval gave {again['greedy_accuracy']}, "
                         f"remask compare {own['greedy_accuracy']}: the two protocols differ")
        else:
            row["fixed_sampler"] = own["sampler"]
            row["fixed_greedy_accuracy"] = own["greedy_accuracy"]
            row["fixed_pass_at_1"] = own["pass_at_k"]["1"]
        if r["pipeline"] != "base (untrained)":
            logged = metrics_rows(run_dir)
            zero = [m["train/frac_reward_zero_std"] for m in logged if "train/frac_reward_zero_std" in m]
            nfe = [m["diffusion/nfe"] for m in logged if "diffusion/nfe" in m]
            sample_s = [m["timing/sample"] for m in logged if "timing/sample" in m]
            row.update(frac_groups_zero_std=sum(zero) / len(zero), rollout_nfe=sum(nfe) / len(nfe),
                       sample_seconds=sum(sample_s))
        fixed.append(row)
    (HERE / "fixed_eval.json").write_text(json.dumps(fixed, indent=1) + "\n")

    by: dict[str, list[dict]] = {}
    for row in fixed:
        by.setdefault(row["pipeline"], []).append(row)
    anchor = {row["seed"]: row["fixed_greedy_accuracy"] for row in by[ANCHOR]}
    header = ("| pipeline | greedy exact match %, llada no-cache eval | own-sampler greedy % | "
              "difference to llada, paired by seed (points) | pass@1 % (T=1) | groups with zero reward std | "
              "rollout NFE | rollout s | train s |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in by.items():
        diffs = [100 * (row["fixed_greedy_accuracy"] - anchor[row["seed"]]) for row in rows]
        trained = name != "base (untrained)"
        lines.append("| " + " | ".join([
            name, fmt_ci([row["fixed_greedy_accuracy"] for row in rows], 100),
            fmt_ci([row["own_greedy_accuracy"] for row in rows], 100) + f" ({rows[0]['own_sampler']})",
            fmt_ci(diffs, 1) if name != ANCHOR else "–",
            fmt_ci([row["fixed_pass_at_1"] for row in rows], 100),
            fmt_ci([row["frac_groups_zero_std"] for row in rows], 1, 2) if trained else "–",
            fmt_ci([row["rollout_nfe"] for row in rows], 1, 1) if trained else "–",
            fmt_ci([row["sample_seconds"] for row in rows], 1, 0) if trained else "–",
            fmt_ci([row["train_seconds"] for row in rows], 1, 0) if trained else "–"]) + " |")
    (HERE / "fixed_eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = pipeline_colours(runs)
    trained = [r for r in runs if r["pipeline"] != "base (untrained)"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for r in trained:
        hist = [h for h in r["train"]["history"] if "train/reward" in h]
        label = r["pipeline"] if r["seed"] == 0 else None
        ax.plot([h["seconds"] for h in hist], [h["train/reward"] for h in hist], color=colours[r["pipeline"]],
                lw=1.0, alpha=0.8, label=label)
    ax.set_xlabel("training wall seconds (shared, loaded machine; one line per seed)")
    ax.set_ylabel("train reward (exact + digit credit)")
    ax.legend(title="rollout sampler", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "reward_vs_seconds.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name in dict.fromkeys(r["pipeline"] for r in trained):
        curves = [[m["train/frac_reward_zero_std"] for m in metrics_rows(run_dirs[(name, r["seed"])])
                   if "train/frac_reward_zero_std" in m] for r in trained if r["pipeline"] == name]
        n = min(len(c) for c in curves)
        stats = [confidence_interval([c[i] for c in curves]) for i in range(n)]
        ax.plot(range(1, n + 1), [m for m, _ in stats], color=colours[name], lw=1.4, label=name)
    ax.set_xlabel("rollout round (2 optimizer steps each)")
    ax.set_ylabel("fraction of prompt groups, all rewards equal")
    ax.set_title("Groups with no GRPO signal (all 6 rewards equal), mean over seeds", fontsize=9)
    ax.legend(title="rollout sampler", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "zero_std_groups.png", dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
