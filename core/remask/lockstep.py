"""Forward passes in lockstep across processes whose parameters are sharded (FSDP2, ZeRO-3).

Under parameter sharding every forward pass is a collective: each decoder layer all-gathers its
shards from every process before it runs. All processes must therefore run the same number of
forward passes, in the same order, or the one that runs an extra pass waits forever for the
others. Data parallel training never needed this (a forward touches no other process), and most
of remask's work does run the same passes everywhere; three things do not:

* threshold decoding (``fast-dllm``): a block ends when every position is confident, so the
  number of steps depends on the data each process samples;
* evaluation when processes hold different numbers of batches;
* an objective whose passes per loss depend on its data (e.g. one pass per recorded step of a
  trajectory of data-dependent length).

:class:`Lockstep` makes the first two safe and the third loud. Before each forward pass of a
model it is attached to, every process votes "one more pass"; when a process leaves a region it
votes "done" until everyone is done. In a *draining* region (sampling, evaluation: no gradients) a
process that is done runs a throw-away pass (``drain``) for every pass another process still runs,
so the collectives match and nothing changes in the results. In a *strict* region (``prepare`` and
``loss``, where passes carry gradients and a throw-away pass would still owe a backward) a
mismatch stops every process with the same :class:`~remask.errors.RemaskError` instead of hanging.

Each vote is one all-reduce of two integers over the default process group: negligible next to
the all-gathers of a sharded forward. The engine attaches a :class:`Lockstep` only when it shards
the policy; otherwise :func:`region` is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import RemaskError

__all__ = ["Lockstep", "any_process", "region"]


class Lockstep:
    """Votes before each forward pass so that sharded processes run the same passes.

    ``device``: where the vote tensor lives (CPU for gloo, the process's GPU for NCCL).
    Attach one instance to the policy and to its sharded reference (``model.lockstep``): their
    passes share one sequence of votes.
    """

    def __init__(self, device: torch.device | str = "cpu", group: Any = None) -> None:
        self.device = torch.device(device)
        self.group = group
        self.region: str | None = None  # the name of the open region, None outside
        self.strict = False
        self._draining = False
        self.drained = 0  # throw-away passes run by this process (for logs and tests)

    def vote(self, more: bool) -> tuple[int, int]:
        """All-reduce of this process's vote: ``(max, min)`` over processes (1 = one more pass)."""
        import torch.distributed as dist

        v = 1 if more else 0
        t = torch.tensor([v, -v], dtype=torch.int64, device=self.device)  # [2]
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return int(t[0]), -int(t[1])

    def before_forward(self) -> None:
        """Called by the model before each forward pass (a no-op outside a region)."""
        if self.region is None or self._draining:
            return
        _, lowest = self.vote(True)
        if lowest == 0 and self.strict:
            raise self._mismatch()

    def _mismatch(self) -> RemaskError:
        return RemaskError(
            f"{self.region}: processes ran different numbers of forward passes while the parameters are "
            "sharded (FSDP/ZeRO-3), which would deadlock; this step's passes depend on each process's data. "
            "Train this pipeline with data parallel (no sharding), or make the passes per step fixed")

    @contextlib.contextmanager
    def open(self, name: str, *, drain: Callable[[], Any] | None) -> Iterator[None]:
        """Run the body as region ``name``; on leaving, wait for the other processes (running
        ``drain`` once per pass they still run) or, without ``drain``, stop all on a mismatch."""
        if self.region is not None:  # nested: the outer region governs
            yield
            return
        self.region, self.strict = name, drain is None
        try:
            yield
            while True:
                highest, _ = self.vote(False)
                if highest == 0:
                    break
                if drain is None:
                    raise self._mismatch()
                self._draining = True
                try:
                    with torch.no_grad():
                        drain()
                finally:
                    self._draining = False
                self.drained += 1
        finally:
            self.region, self.strict = None, False


def region(model: Any, name: str, *, drain: bool) -> contextlib.AbstractContextManager[None]:
    """The lockstep region ``name`` of ``model`` (a no-op when nothing is sharded).

    ``drain=True`` (no gradients: sampling, evaluation): a process that finishes early runs a
    one-token forward pass of ``model`` for each pass another process still runs.
    ``drain=False`` (``prepare``/``loss``): a mismatch raises on every process.
    """
    lock: Lockstep | None = getattr(model, "lockstep", None)
    if lock is None:
        return contextlib.nullcontext()
    fill = None
    if drain:
        def fill() -> None:
            ids = torch.full((1, 1), int(model.mask_token_id), dtype=torch.long, device=model.device)  # [1, 1]
            model.forward(ids)
    return lock.open(name, drain=fill)


def any_process(model: Any, flag: bool) -> bool:
    """``flag`` on any process (one vote) when ``model`` is sharded, else ``flag``: lets every
    process take the same branch before a collective, e.g. skipping the backward of a non-finite
    loss, which one process alone would leave the others waiting in."""
    lock: Lockstep | None = getattr(model, "lockstep", None)
    if lock is None:
        return flag
    highest, _ = lock.vote(flag)
    return highest == 1
