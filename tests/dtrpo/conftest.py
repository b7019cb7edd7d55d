"""Fixtures of the dTRPO tests: policy and reference tiny models (other weights) and a rollout."""

from __future__ import annotations

import pytest

from dtrpo_support import make_rollout, semi_ar_unmask_step, tiny


@pytest.fixture(scope="session")
def policy():
    return tiny(seed=0)


@pytest.fixture(scope="session")
def reference():
    return tiny(seed=1)


@pytest.fixture()
def rollout(policy):
    """4 rows (2 prompts x G=2, left-padded), L = 8, two blocks of 4, 2 steps per block."""
    return make_rollout(policy, semi_ar_unmask_step(4, 8, 4, 2, seed=0), 4)
