"""Test kit for plugin authors (the way pytest ships ``pytester``).

* Fakes: :class:`FakeTokenizer`, :class:`FakeModel` (a tiny random bidirectional mask predictor),
  :class:`FakeSampler`, :class:`FakeReward`, :class:`FakeTask`; :func:`fake_prompts` and
  :func:`fake_rollout` build records without any real model.
* :func:`registered_plugin`: register an inline plugin for the duration of a test.
* :func:`check_component`: contract checks any component class can run on itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from .hookspecs import hookimpl
from .interfaces import (
    COMPONENT_KINDS,
    AdvantageEstimator,
    Component,
    ComponentConfig,
    DataFilter,
    DataFilterContext,
    DiffusionModel,
    LikelihoodEstimator,
    ModelOutput,
    PolicyObjective,
    RewardModel,
    Sampler,
    StepContext,
    StepSelector,
    Task,
)
from .records import Example, LossOutput, PromptBatch, Rewards, Rollout, StepSelection
from .registry import Registry, get_registry

__all__ = [
    "FakeTokenizer",
    "FakeModel",
    "FakeSampler",
    "FakeReward",
    "FakeTask",
    "fake_prompts",
    "fake_rollout",
    "fake_context",
    "fake_data_filter_context",
    "FullLogits",
    "registered_plugin",
    "check_component",
    "HOSTILE_COMPLETIONS",
]

#: model outputs every reward must survive without raising
HOSTILE_COMPLETIONS: tuple[str, ...] = (
    "",
    " ",
    "\x00\x01\x02",
    "<answer>",
    "</answer><answer>",
    "\\boxed{",
    "\\boxed{" * 200,
    "9" * 5000,
    "<answer>" + "(" * 500 + "</answer>",
    "<answer>9**9**9**9</answer>",
    "<answer>__import__('os').system('true')</answer>",
    "\u202e\u2066 mixed ✓ unicode −1",
    "<reasoning>\n" + "a" * 20000 + "\n</reasoning>\n<answer>\n1\n</answer>",
)


class FakeTokenizer:
    """Characters ``0-9 + - * / = space a-z`` plus pad/eos/mask ids. Enough for contract tests."""

    chars = "0123456789+-*/= abcdefghijklmnopqrstuvwxyz<>\n"
    pad_token_id = 0
    eos_token_id = 1
    mask_token_id = 2
    chat_template = None

    def __init__(self) -> None:
        self.offset = 3
        self.vocab_size = self.offset + len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.offset + self.chars.index(c) for c in text.lower() if c in self.chars]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.chars[i - self.offset] for i in ids if i >= self.offset)


class _FakeNet(nn.Module):
    def __init__(self, vocab: int, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: Tensor, mask2d: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.embed(ids)  # [B, S, H]
        if mask2d is not None and mask2d.dim() == 4:
            w = mask2d[:, 0].float()  # [B, S, S]
        else:
            keep = torch.ones(ids.shape, dtype=torch.float32) if mask2d is None else mask2d.float()
            w = keep.unsqueeze(1).expand(-1, ids.shape[1], -1)  # [B, S, S]
        w = w / w.sum(-1, keepdim=True).clamp_min(1.0)
        h = h + torch.tanh(self.mix(w @ h))  # bidirectional mean-pool mixing
        return self.head(h), h


class FakeModel(DiffusionModel):
    """A tiny random bidirectional mask predictor over :class:`FakeTokenizer` (no transformers)."""

    name = "fake"
    supports_4d_mask = True

    class Config(ComponentConfig):
        seed: int = Field(0, description="Seed of the random weights.")
        hidden: int = Field(16, ge=1, description="Hidden size.")

    def __init__(self, config: ComponentConfig | None = None) -> None:
        super().__init__(config)
        self.tokenizer = FakeTokenizer()
        self.mask_token_id = self.tokenizer.mask_token_id
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        g = torch.Generator().manual_seed(self.config.seed)
        self.module = _FakeNet(self.tokenizer.vocab_size, self.config.hidden)
        with torch.no_grad():
            for p in self.module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, input_ids, attention_mask=None, *, position_ids=None, past_key_values=None,
                use_cache=False, output_hidden_states=False) -> ModelOutput:
        self.nfe += 1
        logits, h = self.module(input_ids, attention_mask)
        return ModelOutput(logits=logits, hidden_states=h if output_hidden_states else None)


class FullLogits:
    """``model`` as an adapter without ``supports_logits_to_keep``: every pass computes every position's
    logits and ``keep`` slices them afterwards (what all passes cost before kept logits). Everything
    else is ``model``'s own, so a sampler run through both must decode identically; benchmarks time the
    two side by side (``benchmarks/kept_logits.py``)."""

    supports_logits_to_keep = False
    # the interface's own fallback: a full ``forward`` (``model``'s, through __getattr__), then a slice
    logits = DiffusionModel.logits
    forward_kept = DiffusionModel.forward_kept

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def fake_prompts(texts: Sequence[str] = ("1+1=", "2+3="), group_size: int = 2,
                 tokenizer: FakeTokenizer | None = None, answers: Sequence[str] | None = None) -> PromptBatch:
    """A left-padded :class:`PromptBatch` with each prompt repeated ``group_size`` times."""
    tok = tokenizer or FakeTokenizer()
    rows = [t for t in texts for _ in range(group_size)]
    ids = [tok.encode(t) for t in rows]
    p = max(len(x) for x in ids)
    prompt_ids = torch.full((len(rows), p), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), p), dtype=torch.bool)
    for i, x in enumerate(ids):
        if x:
            prompt_ids[i, p - len(x):] = torch.tensor(x)
            attn[i, p - len(x):] = True
    refs = [{"answer": (answers[j] if answers else "")} for j in range(len(texts)) for _ in range(group_size)]
    groups = torch.arange(len(texts)).repeat_interleave(group_size)
    return PromptBatch(prompt_ids, attn, groups, tuple(rows), tuple(refs))


class FakeSampler(Sampler):
    """Fills completions block by block with random tokens and a valid ``unmask_step``."""

    name = "fake-sampler"

    class Config(ComponentConfig):
        gen_length: int = Field(8, ge=1, description="Completion length L.")
        block_length: int = Field(4, ge=1, description="Block length.")
        steps: int = Field(4, ge=1, description="Total steps T.")

    def sample(self, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        c = self.config
        b = prompts.batch_size
        vocab_lo = 3
        with torch.no_grad():
            logits = model.logits(torch.cat([prompts.prompt_ids, torch.full((b, c.gen_length), model.mask_token_id)], 1))
        vocab = logits.shape[-1]
        ids = torch.randint(vocab_lo, vocab, (b, c.gen_length), generator=generator)
        n_blocks = math.ceil(c.gen_length / c.block_length)
        per_block = max(1, c.steps // n_blocks)
        pos = torch.arange(c.gen_length)
        block = pos // c.block_length
        within = pos % c.block_length
        unmask = block * per_block + (within * per_block) // c.block_length  # [L]
        unmask = unmask.unsqueeze(0).expand(b, -1).clone()
        mask = torch.ones(b, c.gen_length, dtype=torch.bool)
        # Step statistics from the one forward pass (a stand-in for the per-step passes of a real
        # sampler): Σ log p of the tokens committed at each step, their mean entropy, EOS-only flag.
        t = int(unmask.max()) + 1
        comp_logits = logits[:, prompts.prompt_length:].float()  # [B, L, V]
        logp = torch.log_softmax(comp_logits, -1)
        tok_logp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [B, L]
        ent = -(logp.exp() * logp).sum(-1)  # [B, L]
        onehot = torch.nn.functional.one_hot(unmask, t).float()  # [B, L, T]
        counts = onehot.sum(1).clamp_min(1)  # [B, T]
        step_logps = torch.einsum("bl,blt->bt", tok_logp, onehot)
        step_entropy = torch.einsum("bl,blt->bt", ent, onehot) / counts
        is_eos = (ids == model.eos_token_id).float()
        step_all_eos = torch.einsum("bl,blt->bt", is_eos, onehot) == onehot.sum(1)
        return Rollout(
            prompts=prompts, completion_ids=ids, completion_mask=mask, unmask_step=unmask,
            block_length=c.block_length, num_steps=t,
            texts=tuple(model.decode(ids, mask)), nfe=1, sampler={"name": self.name},
            step_logps=step_logps, step_entropy=step_entropy, step_all_eos=step_all_eos,
        )


def fake_rollout(group_size: int = 2, **config: Any) -> tuple[FakeModel, Rollout]:
    model = FakeModel()
    sampler = FakeSampler(FakeSampler.Config(**config))
    return model, sampler.sample(model, fake_prompts(group_size=group_size), torch.Generator().manual_seed(0))


class FakeReward(RewardModel):
    """1.0 when the completion contains the reference answer, else 0.0."""

    name = "fake-contains"

    class Config(ComponentConfig):
        key: str = Field("answer", description="Reference key holding the expected substring.")

    def score(self, *, prompts, completions, references) -> Rewards:
        vals, why = [], []
        for text, ref in zip(completions, references):
            want = str(ref.get(self.config.key, ""))
            ok = bool(want) and want in text
            vals.append(1.0 if ok else 0.0)
            why.append("contains" if ok else "missing")
        return Rewards.from_scores(self.name, vals, why)


class FakeTask(Task):
    """Single-digit additions ``a+b=`` with the sum as reference."""

    name = "fake-task"

    class Config(ComponentConfig):
        size: int = Field(20, ge=1, description="Rows per split.")

    def examples(self, split: str) -> Sequence[Example]:
        start = 0 if split == "train" else 50
        out = []
        for i in range(start, start + self.config.size):
            a, b = i % 10, (i * 7) % 10
            out.append(Example(prompt=f"{a}+{b}=", reference={"answer": str(a + b)}, id=f"{split}-{i}"))
        return out

    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        return float(completion.strip().startswith(str(reference.get("answer", "\x00"))))


def fake_context(model: DiffusionModel | None = None, reward: RewardModel | None = None, seed: int = 0) -> StepContext:
    """A :class:`StepContext` over fakes: the reference is a second fake with other weights."""
    policy = model or FakeModel()
    scorer = reward or FakeReward()

    def score(prompts: PromptBatch, texts: Sequence[str]) -> Rewards:
        return scorer.score(prompts=prompts.texts, completions=list(texts), references=prompts.references)

    return StepContext(policy=policy, reference=FakeModel(FakeModel.Config(seed=seed + 1)),
                       generator=torch.Generator().manual_seed(seed), score=score)


def fake_data_filter_context(model: DiffusionModel | None = None, reward: RewardModel | None = None,
                             seed: int = 0) -> DataFilterContext:
    """A :class:`DataFilterContext` over fakes: examples become :func:`fake_prompts` rows (one each)."""
    policy = model or FakeModel()
    scorer = reward or FakeReward()

    def score(prompts: PromptBatch, texts: Sequence[str]) -> Rewards:
        return scorer.score(prompts=prompts.texts, completions=list(texts), references=prompts.references)

    def prompt_batch(examples: Sequence[Example]) -> PromptBatch:
        return fake_prompts([e.prompt for e in examples], group_size=1,
                            answers=[str(e.reference.get("answer", "")) for e in examples])

    return DataFilterContext(policy=policy, score=score, prompt_batch=prompt_batch,
                             generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def registered_plugin(plugin: Any, name: str = "test-plugin", registry: Registry | None = None,
                      distribution: str = "test-dist", version: str = "0.0") -> Iterator[Registry]:
    """Register ``plugin`` (a module, class instance or namespace with ``@hookimpl`` functions)
    for the duration of a ``with`` block, then unregister it."""
    reg = registry or get_registry()
    ok = reg.register_plugin(plugin, name=name, distribution=distribution, version=version)
    try:
        yield reg
    finally:
        if ok:
            reg.unregister_plugin(name)


# ---------------------------------------------------------------------------------------------
# Contract checks
# ---------------------------------------------------------------------------------------------


def _check_config(cls: type[Component]) -> list[str]:
    problems = []
    cfg = cls.Config
    if cfg.model_config.get("extra") != "forbid":
        problems.append(f"{cls.__name__}.Config must set extra='forbid'")
    for fname, field in cfg.model_fields.items():
        if not field.description:
            problems.append(f"{cls.__name__}.Config.{fname} has no description")
    return problems


def _check_loss_passes(objective: PolicyObjective, rollout: Rollout, seen: list[tuple[int, int]]) -> list[str]:
    """The passes ``loss`` ran against what ``loss_passes`` declares (what the memory planner sizes)."""
    m, p, gen = rollout.batch_size, rollout.prompts.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    declared = objective.loss_passes(gen_length=gen, block_length=rollout.block_length,
                                     steps=rollout.num_steps, selected_steps=0)
    want = sorted((max(1, math.ceil(d.rows * m)), p + max(1, math.ceil(d.completion_length * gen))) for d in declared)
    if sorted(seen) == want:
        return []
    return [f"loss ran {len(seen)} forward pass(es) with gradients of [rows, sequence] {sorted(seen)}, but "
            f"loss_passes() declares {want} (the memory planner sizes the declared ones; override loss_passes)"]


def check_component(cls: type[Component], config: ComponentConfig | None = None, *,
                    model: DiffusionModel | None = None) -> list[str]:
    """Run the contract checks of ``cls``'s kind; return a list of problems (empty = conforms).

    Checks the config model, then exercises the component on fakes: a sampler must commit every
    position exactly once and be deterministic under a seed; a reward must return one finite or NaN
    value per row and survive :data:`HOSTILE_COMPLETIONS`; a selector must return valid step
    indices; an estimator one advantage per row; an objective a finite scalar loss with gradients.
    """
    kind = next((k for k, iface in COMPONENT_KINDS.items() if issubclass(cls, iface)), None)
    if kind is None:
        return [f"{cls!r} implements none of the remask interfaces"]
    problems = _check_config(cls)
    if not getattr(cls, "name", None):
        problems.append(f"{cls.__name__} has no `name`")
    try:
        inst = cls(config if config is not None else cls.Config())
    except Exception as exc:  # noqa: BLE001
        return problems + [f"{cls.__name__}(Config()) raised {type(exc).__name__}: {exc}"]
    fake = model or FakeModel()
    if isinstance(inst, Sampler):
        prompts = fake_prompts()
        r1 = inst.sample(fake, prompts, torch.Generator().manual_seed(3))
        r2 = inst.sample(fake, prompts, torch.Generator().manual_seed(3))
        if not torch.equal(r1.completion_ids, r2.completion_ids):
            problems.append("sampler is not deterministic for a fixed generator seed")
        if int(r1.unmask_step.min()) < 0 or int(r1.unmask_step.max()) >= r1.num_steps:
            problems.append("unmask_step outside 0..num_steps-1")
        if (r1.completion_ids == fake.mask_token_id).any():
            problems.append("completion still contains mask tokens")
    elif isinstance(inst, RewardModel):
        n = len(HOSTILE_COMPLETIONS)
        try:
            out = inst.score(prompts=["p"] * n, completions=list(HOSTILE_COMPLETIONS), references=[{}] * n)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"reward raised on hostile output: {type(exc).__name__}: {exc}")
        else:
            if out.total.shape != (n,):
                problems.append(f"reward returned {tuple(out.total.shape)} values for {n} rows")
            if torch.isinf(out.total).any():
                problems.append("reward returned an infinite value")
        inst.close()
    elif isinstance(inst, StepSelector):
        _, ro = fake_rollout()
        sel = inst.select(ro, torch.Generator().manual_seed(0))
        if sel.batch_size != ro.batch_size:
            problems.append("selection has the wrong number of rows")
        elif ((sel.steps < 0) | (sel.steps >= ro.num_steps))[sel.valid].any():
            problems.append("selected steps outside 0..num_steps-1")
    elif isinstance(inst, AdvantageEstimator):
        _, ro = fake_rollout()
        rw = Rewards.from_scores("r", [float(i % 2) for i in range(ro.batch_size)])
        adv = inst.estimate(rollout=ro, rewards=rw, selection=None, context=fake_context(fake))
        if adv.shape[0] != ro.batch_size or not torch.isfinite(adv).all():
            problems.append("advantages must be finite with one entry (or row of K) per row")
    elif isinstance(inst, PolicyObjective):
        _, ro = fake_rollout()
        ctx = fake_context(fake)
        adv = torch.linspace(-1, 1, ro.batch_size)
        state = inst.prepare(rollout=ro, advantages=adv, selection=None, context=ctx)
        seen: list[tuple[int, int]] = []  # (rows, sequence) of every pass with gradients

        def record(module: Any, args: tuple) -> None:
            if torch.is_grad_enabled():
                seen.append((int(args[0].shape[0]), int(args[0].shape[1])))

        handle = fake.module.register_forward_pre_hook(record)
        try:
            out = inst.loss(state, inner_step=0, context=ctx)
        finally:
            handle.remove()
        problems.extend(_check_loss_passes(inst, ro, seen))
        if out.loss.dim() != 0 or not torch.isfinite(out.loss):
            problems.append("loss must be a finite scalar")
        elif out.loss.requires_grad:
            out.loss.backward()
            if all(p.grad is None for p in fake.module.parameters()):
                problems.append("loss has no gradient into the policy")
        else:
            problems.append("loss does not require grad")
    elif isinstance(inst, LikelihoodEstimator):
        _, ro = fake_rollout()
        ctx = fake_context(fake)
        est = inst.log_ratio(policy=fake, reference=fake, rollout=ro, generator=torch.Generator().manual_seed(0))
        if est.shape != (ro.batch_size,) or not torch.isfinite(est).all():
            problems.append("log_ratio must return one finite value per row")
        elif est.abs().max() > 1e-4:
            problems.append("log_ratio of a model against itself must be 0")
        del ctx
    elif isinstance(inst, DataFilter):
        examples = list(FakeTask(FakeTask.Config(size=4)).examples("train"))
        keep = torch.as_tensor(inst.select(examples=examples, context=fake_data_filter_context(fake)))
        if keep.shape != (len(examples),) or keep.dtype != torch.bool:
            problems.append(f"select must return one bool per example ([{len(examples)}] bool), got "
                            f"{tuple(keep.shape)} {keep.dtype}")
        elif not bool(keep.any()):
            problems.append("select kept no example (a filter must fall back to something it can train on)")
    elif isinstance(inst, Task):
        for split in inst.splits[:2]:
            rows = inst.examples(split)
            if not rows:
                problems.append(f"split {split!r} is empty")
            elif inst.is_correct("", rows[0].reference) not in (0, 0.0, False):
                problems.append("an empty completion counts as correct")
    return problems


class _InlinePlugin:
    """Helper for :func:`registered_plugin`: wrap component classes into a plugin object."""

    _hooks: ClassVar[dict[str, str]] = {
        "model": "register_models", "sampler": "register_samplers", "reward": "register_rewards",
        "step_selector": "register_step_selectors", "advantage": "register_advantage_estimators",
        "objective": "register_objectives", "task": "register_tasks",
        "likelihood": "register_likelihood_estimators", "data_filter": "register_data_filters",
    }


def plugin_of(*classes: type[Component]) -> Any:
    """Build a plugin object registering ``classes`` (each under its interface's hook)."""

    class Plugin:
        pass

    by_hook: dict[str, list[type[Component]]] = {}
    for cls in classes:
        kind = next(k for k, iface in COMPONENT_KINDS.items() if issubclass(cls, iface))
        by_hook.setdefault(_InlinePlugin._hooks[kind], []).append(cls)
    for hook, members in by_hook.items():
        def impl(register, _members=tuple(members)):
            for c in _members:
                register(c)
        impl.__name__ = hook
        setattr(Plugin, hook, staticmethod(hookimpl(impl)))
    return Plugin()


__all__.append("plugin_of")
