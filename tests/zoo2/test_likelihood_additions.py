"""remask.likelihood.views_log_ratio: the shared one-draw estimate behind the coupled and vrpo-elbo estimators."""

from __future__ import annotations

import torch

from remask.functional import full_sequence
from remask.likelihood import coupled_views, stratified_count_views, token_logprobs, views_log_ratio
from remask.testing import FakeModel, fake_rollout


def test_views_log_ratio_is_the_masked_sum_of_token_differences_on_shared_views():
    policy, ro = fake_rollout(group_size=2)
    reference = FakeModel(FakeModel.Config(seed=7))
    keep = torch.ones_like(ro.completion_mask)
    keep[:, -2:] = False
    for views in (coupled_views(ro.prompts.prompt_ids, ro.completion_ids, policy.mask_token_id, seed=1),
                  stratified_count_views(ro.prompts.prompt_ids, ro.completion_ids, policy.mask_token_id, n_t=3, seed=2)):
        _, attn = full_sequence(ro.prompts, ro.completion_ids)
        with torch.no_grad():
            got = views_log_ratio(policy, reference, ro.prompts, ro.completion_ids, views, keep)
            diff = token_logprobs(policy, views, attn, ro.completion_ids) - token_logprobs(reference, views, attn,
                                                                                          ro.completion_ids)
            assert torch.allclose(got, (diff * keep).sum(-1), atol=1e-5)
            assert not torch.allclose(got, torch.zeros_like(got))
            same = views_log_ratio(policy, policy, ro.prompts, ro.completion_ids, views, keep)
        assert torch.equal(same, torch.zeros_like(same))  # the same model on the same views: exactly 0
