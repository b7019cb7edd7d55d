from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import engine_fakes  # noqa: E402


@pytest.fixture
def fakes():
    """The engine's test components, registered for the duration of a test."""
    from remask.testing import registered_plugin

    with registered_plugin(engine_fakes.plugin(), name="engine-test-fakes") as reg:
        yield reg


@pytest.fixture
def make_config(fakes, tmp_path):
    """``make_config(**train_overrides, sections...)`` -> a validated PipelineConfig over the fakes."""
    from remask.config import parse_config

    def make(run: str = "run", sections: dict | None = None, **train):
        raw = engine_fakes.base_config(str(tmp_path / run), **train)
        for key, value in (sections or {}).items():
            raw[key] = value
        return parse_config(raw, source="test.yaml")

    return make
