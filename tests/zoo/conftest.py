"""Shared helpers of the algorithm-zoo tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def official():
    """Load an official-implementation fixture (numbers from the reference code at a named commit)."""

    def load(name: str) -> dict:
        return json.loads((FIXTURES / f"{name}_fixture.json").read_text())

    return load
