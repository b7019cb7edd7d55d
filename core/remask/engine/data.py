"""Training prompts: data order, rendering, tokenisation, left padding and group repetition.

The order of the task's training rows comes from a dedicated seeded generator (the ``data`` stream)
and is the same on every process; each process takes its own contiguous slice of prompts, so the G
rows of one prompt always stay on one process. The position in that order is part of every
checkpoint (:meth:`DataOrder.state_dict`). A data filter (``remask.DataFilter``) can restrict the walk
to a subset of the rows (:meth:`DataOrder.restrict`); the subset is checkpointed with the position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import RemaskError
from ..interfaces import DiffusionModel
from ..records import Example, PromptBatch
from .rng import stream_seed

__all__ = ["DataOrder", "encode_text", "build_prompt_batch"]


class DataOrder:
    """An endless, epoch-wise shuffled walk over ``n`` rows driven by its own generator.

    State: the generator state at the start of the current epoch, the epoch number, the offset
    into the epoch's permutation and the rows walked over (all ``n``, or the subset a data filter
    kept). Restoring it redraws the same permutation and continues at the same row.

    ``before_epoch(epoch)``, when set, is called as the walk crosses into a new epoch and before
    that epoch's permutation is drawn, so it may :meth:`restrict` the rows (the trainer refreshes
    its data filter there).
    """

    def __init__(self, n: int, seed: int, *, shuffle: bool = True) -> None:
        if n <= 0:
            raise RemaskError("the task's train split is empty; there is nothing to train on")
        self.n = n
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "data"))
        self.epoch = 0
        self.offset = 0
        self.subset: list[int] | None = None  # rows kept by a data filter; None = all n
        self.before_epoch: Callable[[int], None] | None = None
        self._epoch_start_state = self.generator.get_state()
        self._order = self._draw()

    @property
    def rows(self) -> list[int]:
        """The row indices walked over (all ``n`` unless :meth:`restrict` kept a subset)."""
        return list(range(self.n)) if self.subset is None else list(self.subset)

    @property
    def size(self) -> int:
        """Rows per epoch: ``n``, or the size of the kept subset."""
        return self.n if self.subset is None else len(self.subset)

    @property
    def position(self) -> float:
        """Epochs done, fractional (``train/epoch``)."""
        return self.epoch + self.offset / self.size

    def _draw(self) -> list[int]:
        rows = self.rows
        if not self.shuffle:
            return rows
        return [rows[i] for i in torch.randperm(len(rows), generator=self.generator).tolist()]

    def restrict(self, rows: Sequence[int]) -> None:
        """Walk over ``rows`` only (sorted, unique, in ``[0, n)``), from a fresh permutation.

        Mid-epoch this starts a new epoch (the rest of the old permutation is dropped); at an epoch
        start (offset 0) the epoch number is kept.
        """
        kept = sorted({int(r) for r in rows})
        if not kept:
            raise RemaskError("the data filter kept no training rows; there is nothing to train on")
        if kept[0] < 0 or kept[-1] >= self.n:
            raise RemaskError(f"the data filter kept row {kept[0] if kept[0] < 0 else kept[-1]}, outside the "
                              f"train split of {self.n} rows")
        if self.offset > 0:
            self.epoch += 1
            self.offset = 0
        self.subset = kept
        self._epoch_start_state = self.generator.get_state()
        self._order = self._draw()

    def take(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into new epochs as needed)."""
        out: list[int] = []
        while len(out) < k:
            if self.offset >= self.size:
                self.epoch += 1
                self.offset = 0
                if self.before_epoch is not None:
                    self.before_epoch(self.epoch)
                self._epoch_start_state = self.generator.get_state()
                self._order = self._draw()
            step = min(k - len(out), self.size - self.offset)
            out.extend(self._order[self.offset:self.offset + step])
            self.offset += step
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "epoch": self.epoch,
            "offset": self.offset,
            "epoch_start_generator_state": self._epoch_start_state.tolist(),
            "subset": self.subset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise RemaskError(
                f"checkpoint data position is for a train split of {state['n']} rows, but the task now has "
                f"{self.n}; resume with the same task settings"
            )
        self.epoch = int(state["epoch"])
        self.offset = int(state["offset"])
        subset = state.get("subset")
        self.subset = None if subset is None else [int(r) for r in subset]
        self._epoch_start_state = torch.tensor(state["epoch_start_generator_state"], dtype=torch.uint8)
        self.generator.set_state(self._epoch_start_state)
        self._order = self._draw()


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of already-rendered text, without adding special tokens a second time."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # tokenizers without the keyword (remask.testing.FakeTokenizer)
        ids = tokenizer.encode(text)
    return list(ids)


def build_prompt_batch(
    model: DiffusionModel,
    examples: Sequence[Example],
    *,
    group_size: int,
    first_group_id: int = 0,
    device: torch.device | str = "cpu",
) -> PromptBatch:
    """Render, tokenise and left-pad ``examples``, each repeated ``group_size`` times (adjacent).

    Group ids are ``first_group_id + j`` for the j-th example, so they are unique across processes
    and steps when the caller numbers prompts globally.
    """
    texts = [model.render_prompt(ex) for ex in examples]
    ids = [encode_text(model.tokenizer, t) for t in texts]
    width = max((len(x) for x in ids), default=0)
    b = len(examples) * group_size
    prompt_ids = torch.full((b, width), model.pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.bool)
    for j, x in enumerate(ids):
        for g in range(group_size):
            row = j * group_size + g
            if x:
                prompt_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                attention[row, width - len(x):] = True
    group_ids = (torch.arange(len(examples), dtype=torch.long) + first_group_id).repeat_interleave(group_size)
    rep_texts = tuple(t for t in texts for _ in range(group_size))
    refs = tuple(dict(ex.reference) for ex in examples for _ in range(group_size))
    ex_ids = tuple(ex.id for ex in examples for _ in range(group_size))
    return PromptBatch(
        prompt_ids=prompt_ids.to(device),
        attention_mask=attention.to(device),
        group_ids=group_ids.to(device),
        texts=rep_texts,
        references=refs,
        example_ids=ex_ids,
    )
