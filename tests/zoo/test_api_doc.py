"""docs/api.md is generated from the core's docstrings and shape comments and must be current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import remask
from remask import functional, likelihood
from remask._apidoc import api_reference

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_reference_is_current():
    assert API.read_text() == api_reference(), (
        "docs/api.md is stale: run `python -m remask._apidoc > docs/api.md`"
    )


def test_api_reference_covers_every_public_piece():
    text = api_reference()
    for record in (remask.PromptBatch, remask.Rollout, remask.Rewards, remask.StepSelection, remask.LossOutput,
                   remask.StepContext):
        assert f"### `{record.__name__}`" in text
        for f in dataclasses.fields(record):
            assert f"| `{f.name}` |" in text, (record.__name__, f.name)
    for module in (functional, likelihood):
        for name in module.__all__:
            assert f"`{name}" in text, (module.__name__, name)
    for attr in ("requires_whole_groups", "uses_reference", "supports_4d_mask", "shift_logits", "scale"):
        assert f"| `{attr}` |" in text
    assert "draw_mask_seeds(context.generator" in text  # the seeded-randomness recipe


def test_shapes_from_source_comments_reach_the_page():
    text = api_reference()
    assert "| `completion_ids` | `Tensor` | [B, L] long |" in text
    assert "| `unmask_step` | `Tensor` | [B, L] long, step at which each position was committed |" in text
