"""The component interfaces every plugin implements.

Each component is a class with

* ``name``: the registry name used in pipeline configs (``objective: {name: grpo}``);
* ``Config``: a pydantic model (``extra="forbid"``, a description on every field) validating the
  component's section of the pipeline config;
* a constructor taking one instance of that ``Config``.

The engine builds components from config and calls them in the order of DESIGN.md:
sample -> reward -> select steps -> advantages -> objective -> optimizer. Nothing here knows any
particular algorithm.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .records import Example, LossOutput, PromptBatch, Rewards, Rollout, StepSelection

__all__ = [
    "ComponentConfig",
    "RewardName",
    "RewardRef",
    "Component",
    "DiffusionModel",
    "ModelOutput",
    "Sampler",
    "RewardModel",
    "StepSelector",
    "AdvantageEstimator",
    "PolicyObjective",
    "ForwardPass",
    "Task",
    "LikelihoodEstimator",
    "DataFilter",
    "StepContext",
    "DataFilterContext",
    "COMPONENT_KINDS",
]


class ComponentConfig(BaseModel):
    """Base of every component's config model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


@dataclass(frozen=True)
class RewardRef:
    """Marker in a config field's type: the string names a reward of the same pipeline.

    Use it through :data:`RewardName` (``accuracy_reward: remask.RewardName | None = None``, or
    ``list[remask.RewardName]``). :func:`remask.config.parse_config` checks every such value against the
    pipeline's ``rewards`` labels (each entry's ``alias``, else its ``name``) when the config is
    loaded, so a misspelt name fails ``remask validate`` with the field's path instead of the first
    rollout. At run time the same label keys ``Rewards.components`` and ``Rewards.weights``.
    """


#: ``str`` naming a reward of the pipeline (its ``alias``, else its ``name``), checked at load time.
RewardName = Annotated[str, RewardRef()]


class Component(ABC):
    """Common shape of every registered component."""

    #: the registry name used in pipeline configs (``objective: {name: grpo}``)
    name: ClassVar[str]
    #: the pydantic model validating this component's config section (``extra="forbid"``)
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()


# ---------------------------------------------------------------------------------------------
# Model adapter
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelOutput:
    """Output of :meth:`DiffusionModel.forward`."""

    logits: Tensor  # [B, S, V]; position i predicts token i (any AR shift already undone)
    hidden_states: Tensor | None = None  # [B, S, H] last hidden states, when asked for
    past_key_values: Any = None  # prefix KV cache, when asked for and supported


class DiffusionModel(Component):
    """Adapter over a Hugging Face mask predictor (LLaDA, Dream, the built-in tiny model, ...).

    Attributes the engine and the algorithms rely on:

    * ``mask_token_id``, ``eos_token_id``, ``pad_token_id``, ``tokenizer``;
    * ``module``: the trainable ``nn.Module`` (possibly PEFT-wrapped);
    * ``supports_4d_mask``: ``forward`` accepts a ``[B, 1, S, S]`` bool attention mask
      (True = may attend), needed for dTRPO's single block-causal pass;
    * ``supports_kv_cache``: ``forward`` accepts and returns a prefix KV cache (Fast-dLLM);
    * ``shift_logits``: the underlying network is AR-shifted (Dream); ``forward`` already undid it;
    * ``nfe``: forward passes run so far (every call of :meth:`forward` adds one).
    """

    mask_token_id: int  # M, the id every masked position holds
    eos_token_id: int  # end of the completion; completion_mask runs through the first one
    pad_token_id: int  # left padding of prompts
    tokenizer: Any  # the Hugging Face (or built-in) tokenizer
    module: nn.Module  # the trainable network, possibly PEFT-wrapped
    #: ``forward`` accepts a ``[B, 1, S, S]`` bool attention mask (True = may attend)
    supports_4d_mask: ClassVar[bool] = False
    #: ``forward`` accepts and returns a prefix KV cache (Fast-dLLM)
    supports_kv_cache: ClassVar[bool] = False
    #: the network predicts token i at position i-1 (AR-initialised models such as Dream); the
    #: adapter undoes the shift, but code that builds its own attention layouts must know it
    shift_logits: ClassVar[bool] = False
    #: ``forward`` accepts ``logits_to_keep`` (a slice of query positions) and runs the output layer
    #: on those positions only; :meth:`logits` with ``keep=`` slices a full output for adapters without it
    supports_logits_to_keep: ClassVar[bool] = False

    def __init__(self, config: ComponentConfig | None = None) -> None:
        super().__init__(config)
        self.nfe = 0

    @abstractmethod
    def forward(
        self,
        input_ids: Tensor,  # [B, S] long
        attention_mask: Tensor | None = None,  # [B, S] bool padding mask, or [B, 1, S, S] bool
        *,
        position_ids: Tensor | None = None,  # [B, S] long
        past_key_values: Any = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """One forward pass of the mask predictor. Implementations add 1 to ``self.nfe``."""

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, keep: slice | None = None,
               **kwargs: Any) -> Tensor:
        """Shorthand for ``forward(...).logits``. # [B, S, V], or [B, |keep|, V]

        ``keep`` (a slice of positions: ``slice(P, None)`` the completion, ``slice(lo, hi)`` one block)
        returns only those positions' logits. Adapters with ``supports_logits_to_keep`` then skip the
        output layer (``d_model × V`` per position: 0.5 B parameters at LLaDA's 126,464 vocabulary)
        and the ``[B, S, V]`` tensor everywhere else; the values are those of the full pass either way
        (bit-identical on CPU, ``tests/diffusion/test_logits_to_keep.py``).
        """
        if keep is None:
            return self.forward(input_ids, attention_mask, **kwargs).logits
        return self.forward_kept(input_ids, attention_mask, keep=keep, **kwargs).logits

    def forward_kept(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, keep: slice,
                     **kwargs: Any) -> ModelOutput:
        """:meth:`forward` whose ``logits`` are those of the ``keep`` positions only (``[B, |keep|, V]``;
        hidden states and cache as :meth:`forward` gives them), on any adapter: with
        ``supports_logits_to_keep`` the output layer runs on those positions alone, otherwise the full
        output is sliced."""
        if self.supports_logits_to_keep:
            return self.forward(input_ids, attention_mask, logits_to_keep=keep, **kwargs)
        out = self.forward(input_ids, attention_mask, **kwargs)
        out.logits = out.logits[:, keep]
        return out

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """The body runs without gradients with the module in eval mode (dropout, LoRA dropout off),
        and the module's mode is restored after: what a sampler decodes and the log-probs it records
        do not depend on whether the caller left the policy in training mode."""
        module = getattr(self, "module", None)
        was_training = isinstance(module, nn.Module) and module.training
        if was_training:
            module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            if was_training:
                module.train(True)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run as the reference policy: the base network without the LoRA adapter.

        Adapters without PEFT wrapping raise, so that nobody mistakes the policy for the reference.
        """
        raise RuntimeError(f"model adapter {self.name!r} has no adapter to disable")
        yield  # pragma: no cover

    @property
    def has_adapter(self) -> bool:
        return False

    # Text helpers: every adapter has a tokenizer; these keep the rendering rule in one place.
    def render_prompt(self, example: Example) -> str:
        """Prompt text for an example: chat template when there is one, then the prefill."""
        tok = self.tokenizer
        prompt = example.prompt
        if isinstance(prompt, str):
            text = prompt
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
        else:
            messages = [dict(m) for m in prompt]
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                text = "\n".join(m["content"] for m in messages)
        return text + example.prefill

    def decode(self, completion_ids: Tensor, completion_mask: Tensor) -> list[str]:
        """Decode completions up to (not including) the first EOS, special tokens skipped."""
        texts = []
        eos = self.eos_token_id
        for ids, keep in zip(completion_ids.tolist(), completion_mask.tolist()):
            kept = [t for t, k in zip(ids, keep) if k and t != eos and t != self.mask_token_id]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
        return texts

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


# ---------------------------------------------------------------------------------------------
# Pipeline stages
# ---------------------------------------------------------------------------------------------


class Sampler(Component):
    """Generates completions and records how they were unmasked (a :class:`Rollout`)."""

    @abstractmethod
    def sample(self, model: DiffusionModel, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        """Decode every row of ``prompts``. The same ``generator`` state gives the same rollout."""


class RewardModel(Component):
    """Scores completions. Model output never raises: bad output scores 0 with a reason."""

    @abstractmethod
    def score(
        self,
        *,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Mapping[str, Any]],
    ) -> Rewards:
        """Per-row rewards; ``None``/NaN means "cannot judge". Use ``Rewards.from_scores``."""

    def close(self) -> None:
        """Release worker pools or sandboxes. Called once when the run ends."""


class StepSelector(Component):
    """Chooses the sampler steps an objective trains on (EGSPO, dTRPO)."""

    @abstractmethod
    def select(self, rollout: Rollout, generator: torch.Generator) -> StepSelection:
        """Return ``steps [B, K]`` (and validity / weights) for every row of ``rollout``."""


class AdvantageEstimator(Component):
    """Turns rewards (and optionally intermediate rewards) into advantages."""

    @abstractmethod
    def estimate(
        self,
        *,
        rollout: Rollout,
        rewards: Rewards,
        selection: StepSelection | None,
        context: StepContext,
    ) -> Tensor:
        """Advantages ``[B]`` or ``[B, K]`` (one per selected step)."""


@dataclass(frozen=True)
class ForwardPass:
    """One forward pass of the policy in a ``loss`` call, as the memory planner (``remask estimate``)
    sizes it: ``[rows · M, P + completion_length · L]`` tokens for a micro-batch of ``M`` rows with
    prompts of ``P`` and completions of ``L`` tokens (fp32 log-probabilities of its last ``L``
    positions are taken). dTRPO's staircase pass reads ``[prompt, y, z]``: ``completion_length=2``;
    MDPO scores its K trained steps of every row in one batch: ``rows=K``."""

    rows: float = 1.0  # rows of the pass per micro-batch row
    completion_length: float = 1.0  # completion positions in its sequence, in units of L


class PolicyObjective(Component):
    """The algorithm's loss.

    The engine calls :meth:`prepare` once per micro-batch of a fresh rollout (no grad: old-policy and
    reference quantities, seeded masks) and then :meth:`loss` once per inner update (``inner_step``
    0..mu-1) with gradients enabled. ``prepare`` returns any object; the engine hands it back to
    ``loss`` untouched.

    An objective that owns trainable parameters of its own (TraFL's log-partition head) returns them
    from :meth:`extra_modules`; the engine puts them in the optimizer (with the learning rate from
    :meth:`extra_param_groups` if given), moves them to the device and checkpoints them.
    """

    #: True when a loss needs all G rows of a group in the same micro-batch (pairwise objectives).
    requires_whole_groups: ClassVar[bool] = False
    #: True when the objective needs the reference policy (the engine then keeps one).
    uses_reference: ClassVar[bool] = True

    @abstractmethod
    def prepare(
        self,
        *,
        rollout: Rollout,
        advantages: Tensor,  # [B] or [B, K]
        selection: StepSelection | None,
        context: StepContext,
    ) -> Any:
        """Compute once-per-rollout quantities for this micro-batch (under ``torch.no_grad``)."""

    @abstractmethod
    def loss(self, state: Any, *, inner_step: int, context: StepContext) -> LossOutput:
        """The loss of one inner update on the micro-batch that ``state`` was prepared for."""

    def setup(self, *, policy: DiffusionModel, reference: DiffusionModel | None = None) -> None:
        """Called once after the models are built and before the optimizer is: size or build the
        objective's own modules here (TraFL's log-partition head reads the hidden size)."""

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules the objective owns besides the policy (name -> module)."""
        return {}

    def extra_param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups for :meth:`extra_modules` (default: the policy's lr)."""
        return [{"params": [p for m in self.extra_modules().values() for p in m.parameters()]}]

    def state_dict(self) -> dict[str, Any]:
        """Objective state to checkpoint besides ``extra_modules`` (counters, schedules)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def loss_passes(self, *, gen_length: int, block_length: int, steps: int,
                    selected_steps: int) -> tuple[ForwardPass, ...]:
        """The forward passes with gradients of one :meth:`loss` call, for the memory planner.

        Their graphs are alive together until ``backward``, so activation memory grows with each;
        ``prepare``'s passes run without gradients one after another (the planner sizes one no-grad
        pass of the largest shape here). ``steps`` is the sampler's T, ``selected_steps`` K, the
        steps per row the step selector picks (0 without a selector). Default: one pass over
        ``[M, P + L]`` (d1, wd1). An objective with more or longer passes (an ELBO with N views, a
        staircase sequence) overrides this;
        ``tests/planner/test_objective_passes.py`` checks every built-in's answer against the
        forwards it really runs.
        """
        return (ForwardPass(),)


class Task(Component):
    """A source of prompts with per-row references, split into train and test.

    ``examples(split)`` returns the rows (deterministic for a given config). ``is_correct`` is the
    task's evaluation parser (spec algorithms.md §5): it decides accuracy, independently of the
    training rewards.
    """

    #: the split names ``examples`` accepts
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    @abstractmethod
    def examples(self, split: str) -> Sequence[Example]:
        """All rows of ``split`` in a fixed order."""

    @abstractmethod
    def is_correct(self, completion: str, reference: Mapping[str, Any]) -> float:
        """Evaluation score of one completion in [0, 1] (1 = correct). Never raises."""


class LikelihoodEstimator(Component):
    """Estimates the log-ratio ``log π_θ(τ|x) − log π_ref(τ|x)`` of sampled completions.

    Objectives use such estimators internally (d1's one-step estimate, dTRPO's reduced trajectory
    estimate, TraFL's masked surrogate, ELBO Monte Carlo); registering them separately lets
    ``remask diagnose`` measure every one's bias and variance against the exact trajectory
    log-ratio computed by brute force, without knowing any algorithm.

    ``scale`` says what one draw estimates: ``"trajectory"`` (the sum over every committed token of
    the recorded trajectory), or ``"per_token"`` (that sum divided by the completion length).
    The pieces the built-in estimators are made of are public: :mod:`remask.likelihood`.
    """

    #: what one draw estimates: ``"trajectory"`` (summed log-ratio) or ``"per_token"`` (divided by L)
    scale: ClassVar[str] = "trajectory"

    @abstractmethod
    def log_ratio(
        self,
        *,
        policy: DiffusionModel,
        reference: DiffusionModel,
        rollout: Rollout,
        generator: torch.Generator,
    ) -> Tensor:
        """One random draw of the estimate for every row. # [B]"""


class DataFilter(Component):
    """Chooses which training examples the engine draws prompts from (a curriculum or data selection).

    The engine calls :meth:`select` before the first rollout, at the start of every later pass over
    the kept examples, and every ``refresh_every_rollouts`` rollouts when the filter's config has
    that field (> 0). Prompts are then drawn, shuffled per pass as usual, from the kept rows only;
    the kept set is part of every checkpoint, so ``--resume`` does not decode again. Example: MDPO's
    over-denoising selection (``over-denoising`` in ``remask_mdpo``).
    """

    @abstractmethod
    def select(self, *, examples: Sequence[Example], context: DataFilterContext) -> Tensor:
        """Which of ``examples`` (the task's whole train split) to train on. # [N] bool

        Return at least one ``True``: a filter that can end up empty implements its own fallback
        (and says so in its config); the engine refuses an empty selection with the filter named.
        """


# ---------------------------------------------------------------------------------------------
# What the engine hands to estimators and objectives
# ---------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """Engine services available to advantage estimators and objectives during one update.

    ``reference`` is ``None`` when no objective asked for it. ``score`` runs the pipeline's reward
    models (weighted, like the final reward) on arbitrary texts for the given prompt rows: EGSPO-SA
    uses it for intermediate rewards. ``generator`` is the likelihood-mask stream: objectives draw
    every random mask from it and never touch the global RNG.

    Seeded randomness per inner step (the recipe every built-in objective follows): in ``prepare``
    draw one integer per distinct mask, ``seeds = remask.likelihood.draw_mask_seeds(context.generator,
    context.inner_steps)``, build the views of each seed (a view is a deterministic function of its
    seed, drawn on the CPU with a local ``torch.Generator``), score them with the old policy and the
    reference under ``torch.no_grad()``; in ``loss(state, inner_step=m)`` score views ``m`` with the
    policy. θ, θ_old and the reference then see the same masks, a resumed run replays them (the
    engine checkpoints the stream), and dropout and data order are not perturbed.
    """

    policy: DiffusionModel  # the model being trained (forward with grad in ``loss``)
    reference: DiffusionModel | None  # the frozen reference (adapter disabled under LoRA), or None
    generator: torch.Generator  # the likelihood-mask stream, seeded by the engine, checkpointed
    score: Callable[[PromptBatch, Sequence[str]], Rewards]  # weighted rewards of arbitrary texts
    global_step: int = 0  # optimizer steps done before this rollout
    inner_steps: int = 1  # μ, the loss calls per micro-batch of one rollout (train.inner_steps)
    group_size: int = 1  # G, completions per prompt (train.group_size)
    extras: dict[str, Any] = field(default_factory=dict)  # values an estimator passes to the objective (EGSPO-SA)

    @property
    def device(self) -> torch.device:
        return self.policy.device


@dataclass
class DataFilterContext:
    """Engine services available to a :class:`DataFilter` while it selects training examples.

    ``prompt_batch(examples)`` renders, tokenises and left-pads examples for the policy exactly as
    the training loop does (one row per example); ``score`` runs the pipeline's weighted rewards, as
    in :class:`StepContext`. ``generator`` is a CPU stream seeded from ``train.seed`` and the global
    step of the refresh, so a resumed run draws the same. The engine calls ``select`` under
    ``torch.no_grad()`` with the policy in eval mode.
    """

    policy: DiffusionModel  # the model being trained, in eval mode
    score: Callable[[PromptBatch, Sequence[str]], Rewards]  # weighted rewards of arbitrary texts
    prompt_batch: Callable[[Sequence[Example]], PromptBatch]  # examples -> left-padded prompts, one row each
    generator: torch.Generator  # CPU, seeded per refresh
    global_step: int = 0  # optimizer steps done before this refresh
    epoch: int = 0  # passes over the kept examples started so far


#: kind name (as used in configs, the registry and ``remask plugins``) -> interface class
COMPONENT_KINDS: dict[str, type[Component]] = {
    "model": DiffusionModel,
    "sampler": Sampler,
    "reward": RewardModel,
    "step_selector": StepSelector,
    "advantage": AdvantageEstimator,
    "objective": PolicyObjective,
    "task": Task,
    "likelihood": LikelihoodEstimator,
    "data_filter": DataFilter,
}
