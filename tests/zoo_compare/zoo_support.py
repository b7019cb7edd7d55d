"""What every zoo table holds fixed: the one protocol check both spec tests run."""

from __future__ import annotations

# what an entry may change: the objective and what it needs; everything else is the protocol
PER_OBJECTIVE_SECTIONS = {"objective", "advantage", "step_selector"}
PER_OBJECTIVE_TRAIN = {"train.inner_steps"}
SHARED_TRAIN = ("prompts_per_step", "group_size", "learning_rate", "lr_scheduler", "warmup_steps", "max_grad_norm",
                "weight_decay", "max_forward_passes")


def check_shared_protocol(spec, configs) -> None:
    """≥ 3 seeds, a forward-pass budget, the base evaluated; entries touch only objective sections and
    ``train.inner_steps``; model, task, sampler, rewards, evaluation and optimizer are the same."""
    assert len(spec.seeds) >= 3 and spec.budget.forward_passes and spec.evaluate_base
    for entry in spec.pipelines:
        assert set(entry.set) <= PER_OBJECTIVE_SECTIONS, entry.name
        per_entry = set(entry.override) - PER_OBJECTIVE_TRAIN
        assert {k: entry.override[k] for k in per_entry} == {k: spec.pipelines[0].override[k] for k in per_entry}, \
            f"{entry.name}: a protocol field differs from {spec.pipelines[0].name}'s"
    first = next(iter(configs.values()))
    for name, cfg in configs.items():
        assert cfg.model.dump() == first.model.dump() and cfg.task.dump() == first.task.dump(), name
        assert cfg.sampler.dump() == first.sampler.dump(), name
        assert [r.dump() for r in cfg.rewards] == [r.dump() for r in first.rewards], name
        assert cfg.eval.model_dump() == first.eval.model_dump(), name
        assert [getattr(cfg.train, k) for k in SHARED_TRAIN] == [getattr(first.train, k) for k in SHARED_TRAIN], name
