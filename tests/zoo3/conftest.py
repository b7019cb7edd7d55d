"""Shared helpers of the third algorithm-zoo tests (MDPO)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def official():
    """Load a reference-implementation fixture (numbers from the named code at a named commit)."""

    def load(name: str) -> dict:
        return json.loads((FIXTURES / f"{name}_fixture.json").read_text())

    return load
