"""Every tag a training run logs is documented in docs/training.md (issue 17), and TensorBoard
holds one run per directory with no step twice after --resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

from remask.engine import sft, train
from remask.engine.sft import parse_sft_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
#: metrics the test objective (engine_fakes.RatioObjective) returns: documented as `train/<key>`
OBJECTIVE_KEYS = ("train/kl", "train/clip_ratio/region_mean", "train/ratio_first")


def _documented_form(tag: str, reward_names: list[str]) -> str:
    for name in reward_names:
        tag = tag.replace(f"/rewards/{name}/", "/rewards/<name>/")
    return re.sub(r"pass@\d+", "pass@k", tag)


def _logged(run_dir: Path) -> set[str]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k for row in rows for k in row if k != "step"}


def test_every_logged_tag_is_documented(make_config, tmp_path):
    doc = DOC.read_text()

    cfg = make_config(max_steps=4, inner_steps=1, logging_steps=1,
                      sections={"eval": {"limit": 4, "batch_size": 4, "before_training": True,
                                         "after_training": True, "samples_per_prompt": 2, "greedy": False}})
    train(cfg)
    tags = _logged(tmp_path / "run")
    raw = {"model": {"name": "fake"}, "task": {"name": "test-completion-task"},
           "sampler": {"name": "fake-sampler", "gen_length": 6, "block_length": 3, "steps": 6},
           "train": {"output_dir": str(tmp_path / "sft"), "max_steps": 2, "prompts_per_step": 2, "group_size": 1,
                     "report_to": [], "progress": False, "log_completions": 0}}
    sft(parse_sft_config(raw))
    tags |= _logged(tmp_path / "sft")
    assert {"train/reward", "perf/rollout_seconds_max_rank", "train/num_tokens", "eval/accuracy",
            "train/completions/max_terminated_length", "train/mask_ratio"} <= tags
    names = ["test-digits", "fake-contains"]
    missing = sorted({_documented_form(t, names) for t in tags if t not in OBJECTIVE_KEYS}
                     - {m for m in re.findall(r"`([^`\s]+)`", doc)})
    assert not missing, f"logged but not in docs/training.md: {missing}"


def test_resume_logs_no_step_twice_and_tensorboard_has_one_run(make_config, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from remask.engine import checkpoint as ckpt

    cfg = make_config(max_steps=6, inner_steps=1, save_steps=2, report_to=["tensorboard"])
    train(cfg)
    run = tmp_path / "run"
    # as if the run had died after step 6 was logged but before checkpoint-6 was complete
    for p in ckpt.list_checkpoints(run):
        if p.name == "checkpoint-6":
            import shutil

            shutil.rmtree(p)
    train(cfg, resume="latest")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(run / "tensorboard"))
    mux.Reload()
    runs = mux.Runs()
    assert len(runs) == 1, runs  # no timestamped hparams run beside it
    (name,) = runs
    assert [e.step for e in mux.Scalars(name, "train/reward")] == [1, 2, 3, 4, 5, 6]
    assert "config" in mux.Runs()[name]["tensors"] or "config/text_summary" in mux.Runs()[name]["tensors"]
