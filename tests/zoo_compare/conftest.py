"""The zoo tables' spec tests: each module names its ``SPEC``; these fixtures build it once."""

from __future__ import annotations

import pytest
from remask.harness.compare import pipeline_configs


@pytest.fixture(scope="module")
def spec_and_configs(request):
    return pipeline_configs(request.module.SPEC)


@pytest.fixture(scope="module")
def spec(spec_and_configs):
    return spec_and_configs[0]


@pytest.fixture(scope="module")
def configs(spec_and_configs):
    return spec_and_configs[1]
