"""ESPO: the sequence-level loss (hand cases, the official code's numbers), its ELBO, the objective."""

from __future__ import annotations

import math

import pytest
import torch
from remask_espo.loss import espo_loss, k2_kl, sequence_elbo
from remask_espo.objective import ESPOObjective

from remask.likelihood import fixed_count_weights
from remask.testing import check_component, fake_context, fake_rollout


def test_spec_hand_cases():
    """Spec algorithms.md §9.8 case 29: ρ = exp(2/256); k2 with ΔE = 1 is 0.5 before the 1/L mean."""
    terms = espo_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]), 256)
    assert float(terms.ratio) == pytest.approx(1.007843, abs=1e-6)
    assert float(terms.loss) == pytest.approx(-math.exp(2 / 256), abs=1e-6)  # inside the clip: −ρA
    assert float(k2_kl(torch.tensor(1.0), torch.tensor(0.0))) == 0.5
    with_kl = espo_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), 4,
                        ref_elbo=torch.tensor([-1.0]), beta=0.1)
    assert float(with_kl.loss) == pytest.approx(0.1 * 0.5 / 4)


def test_clipping_is_on_the_normalised_sequence_ratio():
    # ΔE = 4·ln 2 on L = 4 gives ρ = 2: clipped to 1.2 for A > 0, kept for A < 0
    de = 4 * math.log(2)
    up = espo_loss(torch.tensor([de]), torch.tensor([0.0]), torch.tensor([1.0]), 4, eps_low=0.2)
    down = espo_loss(torch.tensor([de]), torch.tensor([0.0]), torch.tensor([-1.0]), 4, eps_low=0.2)
    assert float(up.loss) == pytest.approx(-1.2) and float(down.loss) == pytest.approx(2.0)


def test_matches_the_official_loss(official):
    """ML-GSAI/ESPO @ b5f2dac ESPOTrainer.compute_loss on fixed ELBOs (k2 KL, symmetric clip)."""
    fx = official("espo")
    assert fx["commit"].startswith("b5f2dac")
    for case in fx["loss_cases"]:
        terms = espo_loss(torch.tensor(case["elbo"]), torch.tensor(case["old_elbo"]), torch.tensor(case["advantages"]),
                          case["gen_length"], eps_low=case["epsilon"], ref_elbo=torch.tensor(case["ref_elbo"]),
                          beta=case["beta"])
        assert float(terms.loss) == pytest.approx(case["loss"], rel=1e-5, abs=1e-6)


def test_matches_the_official_elbo(official):
    """ESPO's _get_elbo with reduce_var on the masks its forward_process drew: our fixed-count weights
    ((L+1)/k on the view, (L+1)/(L−k) on its complement, averaged) give the same sequence ELBO."""
    for case in official("espo")["elbo_cases"]:
        masked = torch.tensor(case["masked"]).bool()  # [B, L]
        views = torch.stack([masked, ~masked])  # [2, B, L]
        span = torch.ones_like(masked)
        w = fixed_count_weights(views, span, include_zero=True)
        elbo = sequence_elbo(torch.tensor(case["view_logps"]), w)
        assert elbo.tolist() == pytest.approx(case["elbo"], abs=1e-4)


def test_contract_uses_reference_only_with_beta():
    assert check_component(ESPOObjective) == []
    assert check_component(ESPOObjective, ESPOObjective.Config(beta=0.0, span="eos", ratio_length="span")) == []
    assert ESPOObjective().uses_reference and not ESPOObjective(ESPOObjective.Config(beta=0.0)).uses_reference


def test_first_inner_step_has_ratio_one_and_counts_forward_passes():
    model, ro = fake_rollout(group_size=2)
    ctx = fake_context(model)
    ctx.inner_steps = 2
    obj = ESPOObjective(ESPOObjective.Config(n_mc=1))
    state = obj.prepare(rollout=ro, advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]), selection=None, context=ctx)
    assert state.prepare_forward_passes == 2 * 2 * 2  # (old + ref) x 2 seeds x 2 views (draw + complement)
    with torch.no_grad():
        out = obj.loss(state, inner_step=0, context=ctx)
    assert out.forward_passes == 2 + 8
    assert out.metrics["clip_ratio/low_mean"] == 0 and out.metrics["clip_ratio/high_mean"] == 0
    # old = θ at the first update: ρ = 1 and the loss is −mean(A) + β·KL/L
    with torch.no_grad():
        kl = k2_kl(obj._elbo(model, state.views[0], state.attention_mask, state.completion_ids), state.ref_elbo[0])
    expected = -state.advantages.mean() + 1e-3 * (kl / state.length).mean()
    assert float(out.loss) == pytest.approx(float(expected), abs=1e-5)
