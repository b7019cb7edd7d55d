"""Fixtures of the diffusion-plugin tests: small tiny-model instances and prompt batches."""

from __future__ import annotations

import pytest
import torch

from remask import PromptBatch


def make_prompts(model, texts=("1+2=", "33+44="), group_size=2) -> PromptBatch:
    """Left-padded prompt batch tokenised with ``model.tokenizer`` (G adjacent rows per prompt)."""
    tok = model.tokenizer
    rows = [t for t in texts for _ in range(group_size)]
    enc = [tok(t, add_special_tokens=False).input_ids for t in rows]
    p = max(len(x) for x in enc)
    ids = torch.full((len(rows), p), model.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), p), dtype=torch.bool)
    for i, x in enumerate(enc):
        ids[i, p - len(x):] = torch.tensor(x)
        attn[i, p - len(x):] = True
    groups = torch.arange(len(texts)).repeat_interleave(group_size)
    return PromptBatch(ids, attn, groups, tuple(rows), tuple({"answer": ""} for _ in rows))


@pytest.fixture(scope="session")
def tiny_model():
    from remask_diffusion.tiny import TinyDiffusionModel

    return TinyDiffusionModel(TinyDiffusionModel.Config(hidden_size=32, num_layers=2, num_heads=2,
                                                        intermediate_size=64, seed=0))


@pytest.fixture()
def prompts(tiny_model):
    return make_prompts(tiny_model)
