"""Test-only components for the engine tests (registered with remask.testing.registered_plugin)."""

from __future__ import annotations

import os
from typing import Any

import torch
from pydantic import Field

import remask
from remask import functional as F
from remask.testing import FakeModel, FakeReward, FakeSampler, FakeTask, plugin_of


class GroupMeanAdvantage(remask.AdvantageEstimator):
    """A_i = r_i − mean of its group (d1)."""

    name = "test-group-mean"

    class Config(remask.ComponentConfig):
        pass

    def estimate(self, *, rollout, rewards, selection, context):
        r = rewards.total.float()
        _, inv = torch.unique(rollout.prompts.group_ids, return_inverse=True)
        means = torch.zeros(int(inv.max()) + 1).index_add_(0, inv, r) / torch.bincount(inv).float()
        return r - means[inv]


class RatioObjective(remask.PolicyObjective):
    """Clipped-ratio surrogate on one-step log-probs of the fully masked completion, k3 KL to the
    reference, prompt tokens masked with p=0.15 from ``ctx.generator`` (a miniature d1)."""

    name = "test-ratio"

    class Config(remask.ComponentConfig):
        beta: float = Field(0.04, description="KL weight.")
        epsilon: float = Field(0.2, description="Clip range.")
        nan_at_step: int = Field(-1, description="Return a NaN loss at this global step (tests).")
        prompt_mask_prob: float = Field(0.15, description="Probability of masking a prompt token.")

    def _logps(self, model, rollout, prompt_mask):
        ids, attn = F.full_sequence(rollout.prompts, rollout.completion_ids)
        p = rollout.prompts.prompt_length
        noisy = ids.clone()
        noisy[:, :p] = torch.where(prompt_mask, model.mask_token_id, noisy[:, :p])
        noisy[:, p:] = model.mask_token_id
        logits = model.logits(noisy, attn)[:, p:]
        return F.gather_logprobs(logits, rollout.completion_ids)  # [B, L]

    def prepare(self, *, rollout, advantages, selection, context):
        p = rollout.prompts.prompt_length
        prompt_mask = torch.rand(rollout.batch_size, p, generator=context.generator) < self.config.prompt_mask_prob
        old = self._logps(context.policy, rollout, prompt_mask)
        ref = self._logps(context.reference, rollout, prompt_mask) if context.reference is not None else old
        return {"rollout": rollout, "adv": advantages, "old": old, "ref": ref, "pm": prompt_mask}

    def loss(self, state, *, inner_step, context):
        new = self._logps(context.policy, state["rollout"], state["pm"])
        ratio = torch.exp(new - state["old"])
        adv = state["adv"].unsqueeze(1)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - self.config.epsilon, 1 + self.config.epsilon) * adv)
        kl = F.k3_kl(new, state["ref"])
        mask = state["rollout"].completion_mask
        loss = F.masked_mean(-(surrogate - self.config.beta * kl), mask)
        if context.global_step == self.config.nan_at_step:
            loss = loss * float("nan")
        clipped = ((ratio - 1).abs() > self.config.epsilon).float()
        return remask.LossOutput(loss=loss, metrics={"kl": float(F.masked_mean(kl.detach(), mask)),
                                                     "clip_ratio/region_mean": float(F.masked_mean(clipped, mask)),
                                                     "ratio_first": float(ratio.detach().mean())},
                                 forward_passes=1)


class HeadObjective(RatioObjective):
    """RatioObjective plus a learned scalar head (like TraFL's log-partition) and a step counter."""

    name = "test-head"
    uses_reference = False

    def __init__(self, config=None):
        super().__init__(config)
        self.head = torch.nn.Linear(1, 1)
        self.calls = 0

    def extra_modules(self):
        return {"log_z": self.head}

    def extra_param_groups(self):
        return [{"params": list(self.head.parameters()), "lr": 0.1}]

    def loss(self, state, *, inner_step, context):
        out = super().loss(state, inner_step=inner_step, context=context)
        self.calls += 1
        z = self.head(torch.ones(1, 1)).squeeze()
        return remask.LossOutput(loss=out.loss + (z - 1.0) ** 2, metrics=out.metrics, forward_passes=1)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = int(state.get("calls", 0))


class RaisingReward(remask.RewardModel):
    """Raises on every call (a broken verifier)."""

    name = "test-raising"

    class Config(remask.ComponentConfig):
        pass

    def score(self, *, prompts, completions, references):
        raise RuntimeError("verifier crashed")


class LengthReward(remask.RewardModel):
    """Fraction of digits in the completion (dense, so advantages are non-zero)."""

    name = "test-digits"

    class Config(remask.ComponentConfig):
        pass

    def score(self, *, prompts, completions, references):
        vals = [sum(c.isdigit() for c in t) / max(len(t), 1) for t in completions]
        return remask.Rewards.from_scores(self.name, vals)


class RowSeededSampler(FakeSampler):
    """Random tokens drawn from a generator seeded by the row's prompt and its index in the group,
    so a row's completion does not depend on how rows are split over processes."""

    name = "test-row-sampler"

    def sample(self, model, prompts, generator):
        c = self.config
        b = prompts.batch_size
        ids = torch.empty(b, c.gen_length, dtype=torch.long)
        for i in range(b):
            within = i - int((prompts.group_ids == prompts.group_ids[i]).nonzero()[0])
            seed = int(prompts.prompt_ids[i].sum()) * 131 + within * 7 + int(prompts.group_ids[i]) * 1009
            g = torch.Generator().manual_seed(seed)
            ids[i] = torch.randint(3, model.tokenizer.vocab_size, (c.gen_length,), generator=g)
        step = torch.arange(c.gen_length).unsqueeze(0).expand(b, -1) % c.steps
        model.nfe += 1
        mask = torch.ones(b, c.gen_length, dtype=torch.bool)
        return remask.Rollout(prompts=prompts, completion_ids=ids, completion_mask=mask, unmask_step=step.clone(),
                              block_length=c.gen_length, num_steps=c.steps, texts=tuple(model.decode(ids, mask)),
                              nfe=1, sampler={"name": self.name})


class SlowSampler(FakeSampler):
    """FakeSampler that sleeps (gives a test time to kill the process mid-run)."""

    name = "test-slow-sampler"

    def sample(self, model, prompts, generator):
        import time

        time.sleep(float(os.environ.get("REMASK_TEST_SAMPLE_SLEEP", "0")))
        return super().sample(model, prompts, generator)


class CompletionTask(FakeTask):
    """FakeTask whose references carry the target completion (for `remask sft`)."""

    name = "test-completion-task"

    def examples(self, split):
        return [remask.Example(prompt=e.prompt, reference={**e.reference, "completion": e.reference["answer"]},
                               id=e.id) for e in super().examples(split)]


PLUGIN_CLASSES = (FakeModel, FakeSampler, FakeReward, FakeTask, GroupMeanAdvantage, RatioObjective, HeadObjective,
                  RaisingReward, LengthReward, RowSeededSampler, SlowSampler, CompletionTask)


def plugin() -> Any:
    return plugin_of(*PLUGIN_CLASSES)


def base_config(output_dir: str, **train: Any) -> dict[str, Any]:
    """A small pipeline over the fakes (plain data, as loaded from YAML)."""
    t = {"output_dir": output_dir, "max_steps": 4, "prompts_per_step": 2, "group_size": 2, "inner_steps": 2,
         "learning_rate": 0.05, "lr_scheduler": "constant", "report_to": [], "progress": False,
         "log_completions": 0, "save_total_limit": 3, "seed": 7}
    t.update(train)
    return {
        "model": {"name": "fake"},
        "task": {"name": "fake-task"},
        "sampler": {"name": "fake-sampler", "gen_length": 6, "block_length": 3, "steps": 6},
        "rewards": [{"name": "test-digits", "weight": 1.0}, {"name": "fake-contains", "weight": 0.5}],
        "advantage": {"name": "test-group-mean"},
        "objective": {"name": "test-ratio"},
        "train": t,
        "eval": {"limit": 4, "batch_size": 4},
    }


def driver_config(run_dir: str, max_steps: int) -> dict[str, Any]:
    """The config of ``engine_driver.py`` (a slow sampler so that a test can kill the process mid-run)."""
    raw = base_config(run_dir, max_steps=max_steps, save_steps=2, lr_scheduler="cosine")
    raw["sampler"] = {"name": "test-slow-sampler", "gen_length": 6, "block_length": 3, "steps": 6}
    return raw
