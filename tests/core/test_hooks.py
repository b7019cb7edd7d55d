"""Each lifecycle hook reaches plugins through the registry facade, with keyword arguments."""

from __future__ import annotations

from remask import hookimpl
from remask.registry import Registry
from remask import Rewards
from remask.testing import fake_rollout


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def after_rollout(self, rollout, rewards, step):
        self.calls.append(("after_rollout", rollout.batch_size, rewards.batch_size, step))

    @hookimpl
    def after_step(self, step, metrics):
        self.calls.append(("after_step", step, dict(metrics)))

    @hookimpl
    def on_train_end(self, output_dir, metrics):
        self.calls.append(("on_train_end", output_dir, dict(metrics)))


class PartialArgs:
    """A hook implementation may take a subset of the arguments."""

    def __init__(self):
        self.steps = []

    @hookimpl
    def after_step(self, step):
        self.steps.append(step)


def test_lifecycle_hooks_reach_plugins():
    reg = Registry()
    rec, part = Recorder(), PartialArgs()
    reg.register_plugin(rec, name="rec")
    reg.register_plugin(part, name="part")
    _, ro = fake_rollout()
    rw = Rewards.from_scores("r", [1.0] * ro.batch_size)
    reg.after_rollout(rollout=ro, rewards=rw, step=3)
    reg.after_step(step=3, metrics={"train/reward": 0.5})
    reg.on_train_end(output_dir="/tmp/run", metrics={"train/reward": 0.5})
    assert rec.calls == [
        ("after_rollout", ro.batch_size, ro.batch_size, 3),
        ("after_step", 3, {"train/reward": 0.5}),
        ("on_train_end", "/tmp/run", {"train/reward": 0.5}),
    ]
    assert part.steps == [3]


def test_registration_hooks_each_register_their_kind():
    from remask.testing import FakeModel, FakeReward, FakeSampler, FakeTask, plugin_of
    from remask.registry import HOOK_FOR_KIND

    # register_models, register_samplers, register_rewards, register_tasks through plugin_of;
    # register_objectives, register_advantage_estimators, register_step_selectors below.
    import torch
    from remask import AdvantageEstimator, PolicyObjective, StepSelector, StepSelection, LossOutput

    class Sel(StepSelector):
        name = "sel"

        def select(self, rollout, generator):
            z = torch.zeros(rollout.batch_size, 1, dtype=torch.long)
            return StepSelection(steps=z, valid=z.bool() | True)

    class Adv(AdvantageEstimator):
        name = "adv"

        def estimate(self, *, rollout, rewards, selection, context):
            return rewards.total

    class Obj(PolicyObjective):
        name = "obj"

        def prepare(self, *, rollout, advantages, selection, context):
            return None

        def loss(self, state, *, inner_step, context):
            return LossOutput(loss=torch.zeros((), requires_grad=True))

    reg = Registry()
    reg.register_plugin(plugin_of(FakeModel, FakeSampler, FakeReward, FakeTask, Sel, Adv, Obj), name="all")
    got = {c.kind: c.name for c in reg.components()}
    assert got == {"model": "fake", "sampler": "fake-sampler", "reward": "fake-contains", "task": "fake-task",
                   "step_selector": "sel", "advantage": "adv", "objective": "obj"}
    assert set(HOOK_FOR_KIND.values()) == {
        "register_models", "register_samplers", "register_rewards", "register_tasks",
        "register_objectives", "register_advantage_estimators", "register_step_selectors",
        "register_likelihood_estimators", "register_data_filters",
    }


def test_register_likelihood_estimators():
    import torch
    from remask import LikelihoodEstimator
    from remask.testing import plugin_of

    class Zero(LikelihoodEstimator):
        name = "zero-ratio"

        def log_ratio(self, *, policy, reference, rollout, generator):
            return torch.zeros(rollout.batch_size)

    reg = Registry()
    reg.register_plugin(plugin_of(Zero), name="lik")
    assert reg.names("likelihood") == ["zero-ratio"]
