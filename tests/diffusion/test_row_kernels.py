"""The per-step vocabulary kernels are bit-identical to the plain torch forms they replace:
``row_max`` to ``torch.max(-1)`` (first maximal index, NaN rows included) and ``masked_rows`` to
``logits[masked].float()`` (also for block slices of a longer output, bfloat16, and a reused
workspace), so that rollouts and recorded step statistics do not change."""

from __future__ import annotations

import pytest
import torch

from remask_diffusion.sampling import RowWorkspace, masked_rows, max_excluding_, propose, row_max

LLADA_V = 126464  # LLaDA's vocabulary: 2^9 · 13 · 19, chunks of 416 x 304


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32) if t.is_floating_point() else t


def assert_same(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert torch.equal(bits(got[0]), bits(want[0])) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("v", [LLADA_V, 32768, 1009, 100])  # 1009 is prime and 100 small: plain max
def test_row_max_equals_torch_max_with_ties_nan_and_signed_zero(v):
    g = torch.Generator().manual_seed(v)
    x = torch.randn(2, 3, v, generator=g).to(torch.bfloat16).float()  # bfloat16 grid: many exact ties
    x[0, 0] = x[0, 0].clamp_max(0.5)  # the maximum 0.5 occurs many times: the first one must win
    x[0, 1, :] = -1.0
    x[0, 1, v - 1] = 3.0  # maximum in the last chunk only
    x[0, 2, :] = -1.0
    x[0, 2, 7], x[0, 2, v // 2] = -0.0, 0.0  # ±0 compare equal: the first index and its sign
    x[1, 0, v // 3] = float("nan")  # a NaN row: max returns NaN and that index
    x[1, 1, :] = float("-inf")
    assert_same(row_max(x), x.max(-1))
    block = torch.randn(2, 10, v, generator=g)[:, 3:8]  # a non-contiguous block slice
    assert_same(row_max(block), block.max(-1))
    assert_same(row_max(block.to(torch.bfloat16)), block.to(torch.bfloat16).max(-1))


def test_max_excluding_restores_the_column_and_skips_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, LLADA_V, generator=g)
    x[:, 126336] = 50.0  # the mask column would win
    before = x.clone()
    values, ids = max_excluding_(x, 126336)
    assert torch.equal(x, before)
    want = before.clone()
    want[:, 126336] = float("-inf")
    assert_same((values, ids), want.max(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b", [1, 3])
def test_masked_rows_equals_boolean_indexing(dtype, b):
    g = torch.Generator().manual_seed(b)
    full = torch.randn(b, 12, 500, generator=g).to(dtype)  # [B, S, V] a model output
    masked = torch.rand(b, 4, generator=g) < 0.6
    masked[0, 1] = True
    workspace = RowWorkspace(b * 4)
    for logits in (full[:, 5:9], full[:, 8:], full[:, :4].contiguous()):  # block slices and a copy
        want = logits[masked].float()
        assert torch.equal(masked_rows(logits, masked), want)
        got = masked_rows(logits, masked, workspace.get(logits))
        assert torch.equal(got, want) and got.data_ptr() == workspace.buffer.data_ptr()
    odd = full.transpose(1, 2)[:, :4]  # no unit stride over V... ([B, 4, S]): the indexing path
    assert torch.equal(masked_rows(odd, masked), odd[masked].float())


def test_propose_with_a_workspace_is_bit_identical_and_leaves_logits_alone():
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 20, LLADA_V // 8, generator=g) * 3)[:, 4:12]  # [B, Bl, V] block of a longer pass
    before = logits.clone()
    current = torch.full((2, 8), 5)
    masked = torch.rand(2, 8, generator=g) < 0.7
    commit = masked & (torch.rand(2, 8, generator=g) < 0.5)
    for tau in (0.0, 0.8):
        plain = propose(logits.contiguous()[masked].unsqueeze(0), current[masked].unsqueeze(0),
                        torch.ones(1, int(masked.sum()), dtype=torch.bool), temperature=tau, noise="gumbel",
                        generator=torch.Generator().manual_seed(1), mask_token_id=5)
        lean = propose(logits, current, masked, temperature=tau, noise="gumbel",
                       generator=torch.Generator().manual_seed(1), mask_token_id=5,
                       workspace=RowWorkspace(16).get(logits))
        assert torch.equal(lean.ids[masked], plain.ids[0]) and torch.equal(lean.logp[masked], plain.logp[0])
        assert torch.equal(lean.confidence[masked], plain.confidence[0])
        flat_commit = commit[masked].unsqueeze(0)
        assert torch.equal(lean.entropy(commit)[masked], plain.entropy(flat_commit)[0])
    assert torch.equal(logits, before)
