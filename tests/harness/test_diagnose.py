"""remask diagnose: exact trajectory log-ratio by brute force, every registered estimator measured."""

from __future__ import annotations

import copy

import torch

from remask.engine.data import build_prompt_batch
from remask.functional import full_sequence, gather_logprobs
from remask.harness.diagnose import diagnose_estimators, exact_trajectory_log_ratio
from remask.registry import get_registry
from remask.testing import FakeTask


def _models_and_rollout():
    reg = get_registry()
    cls = reg.get("model", "tiny")
    reference = cls(cls.Config(path="random", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                               max_length=16, seed=0))
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    sampler_cls = reg.get("sampler", "llada")
    sampler = sampler_cls(sampler_cls.Config(gen_length=4, block_length=2, steps=4, temperature=1.0))
    examples = list(FakeTask(FakeTask.Config(size=3)).examples("test"))
    prompts = build_prompt_batch(policy, examples, group_size=1)
    rollout = sampler.sample(policy, prompts, torch.Generator().manual_seed(1))
    return policy, reference, rollout


def test_exact_log_ratio_is_the_sum_over_every_step():
    policy, reference, rollout = _models_and_rollout()
    exact = exact_trajectory_log_ratio(policy, reference, rollout)
    # by hand for row 0: rebuild x_k, score the tokens committed at k under both models
    total = 0.0
    p = rollout.prompts.prompt_length
    for k in range(rollout.num_steps):
        committed = rollout.unmask_step[0] == k
        x = torch.where(rollout.unmask_step[0] >= k, torch.tensor(policy.mask_token_id), rollout.completion_ids[0])
        ids, attn = full_sequence(rollout.prompts, x.unsqueeze(0).expand(rollout.batch_size, -1))
        with torch.no_grad():
            lp = gather_logprobs(policy.logits(ids, attn)[:1, p:], rollout.completion_ids[:1])[0]
            lr = gather_logprobs(reference.logits(ids, attn)[:1, p:], rollout.completion_ids[:1])[0]
        total += float(((lp - lr) * committed).sum())
    assert abs(float(exact[0]) - total) < 1e-4
    assert exact.abs().max() > 1e-3  # the perturbed policy differs from the reference


def test_every_registered_estimator_is_measured_and_the_exact_one_is_unbiased():
    policy, reference, rollout = _models_and_rollout()
    estimators = [(c.name, c.cls(c.cls.Config())) for c in get_registry().components("likelihood")]
    assert {"d1-one-step", "elbo", "dtrpo-trajectory", "trafl-surrogate"} <= {n for n, _ in estimators}
    results, exact = diagnose_estimators(estimators, policy, reference, rollout, draws=48, seed=0)
    by_name = {r.name: r for r in results}
    assert all(r.forward_passes_per_draw > 0 and r.std == r.std for r in results)
    # dTRPO's reduced estimator reading the sampler's own states is unbiased (spec case 20)
    assert by_name["dtrpo-trajectory"].abs_bias_se < 4.0, by_name["dtrpo-trajectory"]


class _Shifted:
    """A stand-in estimator: the exact log-ratio plus a fixed offset plus optional N(0, noise²) noise."""

    scale = "trajectory"

    def __init__(self, exact, offset, noise=0.0):
        self.exact, self.offset, self.noise = exact, offset, noise

    def log_ratio(self, *, policy, reference, rollout, generator):
        return self.exact + self.offset + self.noise * torch.randn(self.exact.shape, generator=generator,
                                                                   dtype=torch.float64)


def test_per_row_z_counts_do_not_let_biases_cancel():
    policy, reference, rollout = _models_and_rollout()
    exact = exact_trajectory_log_ratio(policy, reference, rollout)
    offsets = torch.tensor([3.0, -3.0, 0.0], dtype=torch.float64)  # biases that cancel in the signed mean
    results, _ = diagnose_estimators([("exact", _Shifted(exact, 0.0)), ("cancel", _Shifted(exact, offsets, 0.5)),
                                      ("noisy", _Shifted(exact, 0.0, 0.5))],
                                     policy, reference, rollout, draws=400, seed=0)
    exact_r, cancel, noisy = results
    assert exact_r.abs_bias_se == 0.0 and exact_r.rows_over_2 == 0 and exact_r.rows == 3
    assert abs(cancel.bias) < 0.1  # the signed mean hides the bias ...
    assert cancel.rows_over_3 == 2 and cancel.abs_bias_se > 20  # ... the per-row z does not
    assert noisy.rows_over_3 == 0 and noisy.abs_bias_se < 3.0
    assert [abs(z) > 2 for z in cancel.row_z].count(True) == cancel.rows_over_2


def test_a_deterministic_biased_estimator_is_infinitely_many_standard_errors_off():
    policy, reference, rollout = _models_and_rollout()
    exact = exact_trajectory_log_ratio(policy, reference, rollout)
    [r], _ = diagnose_estimators([("off", _Shifted(exact, 1.0))], policy, reference, rollout, draws=4, seed=0)
    assert r.abs_bias_se == float("inf") and r.rows_over_3 == 3
