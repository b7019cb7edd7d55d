"""Every shipped example config validates (pipelines, SFT configs and comparison specs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remask.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml")
                  if "accelerate" not in p.parts and "plugin-template" not in p.parts)


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "tiny-arith-sft.yaml", "compare-tiny.yaml", "llada-gsm8k-d1.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_validates(path, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert ": OK" in capsys.readouterr().out
