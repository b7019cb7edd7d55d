"""The pipeline config: YAML in, a validated :class:`PipelineConfig` out.

A pipeline config has one section per stage. Component sections name a registered component and
carry its parameters next to the name; the component's own pydantic ``Config`` validates them::

    model:     {name: tiny, path: builtin:tiny-arith}
    task:      {name: arithmetic, digits: 2}
    sampler:   {name: llada, gen_length: 8, block_length: 8, steps: 8}
    rewards:   [{name: arithmetic-correct, weight: 1.0}]
    advantage: {name: group-mean}
    objective: {name: d1, beta: 0.04}
    train:     {max_steps: 100, group_size: 8}
    eval:      {split: test, limit: 500}

Every problem is reported, one line each, as ``FILE: field.path: what is wrong (what is allowed)``.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, RemaskError
from .interfaces import ComponentConfig, RewardRef
from .registry import Registry, get_registry

__all__ = [
    "ComponentSpec",
    "RewardSpec",
    "LoraSettings",
    "TrainConfig",
    "EvalConfig",
    "PipelineConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "parse_override_args",
    "OverrideText",
    "unknown_sections",
    "SECTION_KINDS",
]

#: pipeline section -> component kind in the registry
SECTION_KINDS: dict[str, str] = {
    "model": "model",
    "task": "task",
    "sampler": "sampler",
    "rewards": "reward",
    "advantage": "advantage",
    "step_selector": "step_selector",
    "objective": "objective",
    "data_filter": "data_filter",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class LoraSettings(_Strict):
    """PEFT LoRA applied by the engine to the policy; the reference is the adapter disabled."""

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout probability.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )
    load_in_4bit: bool = Field(
        False, description="QLoRA: quantise the base to NF4 with double quantisation (bitsandbytes; CUDA or its CPU backend)."
    )


class TrainConfig(_Strict):
    """Engine settings: everything that is not algorithmic."""

    output_dir: str = Field("runs/remask", description="Run directory: logs, checkpoints, manifest.")
    overwrite_output_dir: bool = Field(
        False,
        description="Start a new run in a non-empty output_dir, deleting the earlier run's checkpoints and logs "
                    "(`--overwrite`); without it a new run refuses such a directory.",
    )
    torch_threads: int | None = Field(
        None, ge=1,
        description="torch intra-op threads per process; None: OMP_NUM_THREADS when set, else the CPU cores "
                    "available to this process divided by the processes on this machine (LOCAL_WORLD_SIZE).",
    )
    seed: int = Field(0, description="Seed of every RNG stream (sampling, likelihood masks, data order).")
    max_steps: int = Field(100, ge=0, description="Optimizer steps to run.")
    prompts_per_step: int = Field(4, ge=1, description="Distinct prompts per optimizer step (global, all processes).")
    group_size: int = Field(8, ge=1, description="G: completions sampled per prompt.")
    micro_batch_size: int = Field(
        0, ge=0, description="Rows per forward/backward on each process; 0 means all rows of the process at once."
    )
    inner_steps: int = Field(1, ge=1, description="mu: optimizer updates per rollout (PPO-style inner iterations).")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "cosine_with_min_lr", "linear"] = Field(
        "constant_with_warmup",
        description="Learning-rate schedule, as transformers' get_scheduler names them (cosine_with_min_lr: half a "
                    "cosine from the peak down to min_lr_rate x peak).",
    )
    min_lr_rate: float = Field(
        0.0, ge=0, le=1, description="cosine_with_min_lr: the final learning rate as a fraction of the peak."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_grad_norm: float | None = Field(1.0, description="Clip the gradient norm to this value (None: no clipping).")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="accelerate mixed precision.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    dropout: bool = Field(
        False,
        description="Train with dropout active. Off by default so that the first inner update's ratio is exactly 1.",
    )
    lora: LoraSettings | None = Field(None, description="Train a LoRA adapter instead of all weights.")
    ref_update_every: int | None = Field(
        None, ge=1,
        description="Without LoRA: every N optimizer steps move the frozen reference towards the policy, "
                    "ref <- ref_mix_alpha * policy + (1 - ref_mix_alpha) * ref (TRL's sync_ref_model).",
    )
    ref_mix_alpha: float = Field(
        1.0, gt=0, le=1, description="Mixing weight of the policy in a reference update (1: copy the policy)."
    )
    max_forward_passes: int | None = Field(
        None, ge=1, description="Also stop once sampling and losses have run this many model forward passes."
    )
    max_seconds: float | None = Field(None, gt=0, description="Also stop after this many seconds of training.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    log_completions: int = Field(4, ge=0, description="Completions printed and written to the table per log step.")
    save_steps: int = Field(0, ge=0, description="Save a checkpoint every N optimizer steps (0: only at the end).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep at most this many checkpoints.")
    report_to: list[Literal["tensorboard"]] = Field(["tensorboard"], description="Experiment trackers.")
    progress: bool = Field(True, description="Show a progress bar on the main process.")
    offline_rollouts: str | None = Field(
        None, description="Train from rollouts stored by `remask rollouts` in this directory instead of sampling."
    )
    stop_at_accuracy: float | None = Field(
        None, ge=0, le=1,
        description="Stop once greedy held-out accuracy (checked every eval.every_steps) reaches this fraction.",
    )
    save_final_model: str | None = Field(
        None, description="Also write the final policy with save_pretrained to this directory (`remask sft --save-to`).",
    )


class EvalConfig(_Strict):
    """Held-out evaluation with one fixed sampler configuration."""

    split: str = Field("test", description="Task split to evaluate on.")
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N rows of the split.")
    samples_per_prompt: int = Field(1, ge=1, description="n completions per prompt (pass@k for k = 1..n).")
    greedy: bool = Field(True, description="Decode greedily (temperature 0) for accuracy.")
    batch_size: int = Field(64, ge=1, description="Prompts per sampler call.")
    sampler: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the sampler section for evaluation (e.g. steps); with `name`, another sampler with its own defaults (gen_length, block_length, steps and the sampling temperature carried over)."
    )
    gen_lengths: list[int] = Field(default_factory=list, description="Evaluate at several generation lengths.")
    before_training: bool = Field(False, description="`remask train` evaluates before the first step.")
    after_training: bool = Field(False, description="`remask train` evaluates after the last step.")
    every_steps: int = Field(0, ge=0, description="Evaluate every N optimizer steps during training (0: never).")
    seed: int = Field(1234, description="Seed of the evaluation sampler.")


class ComponentSpec(BaseModel):
    """A component chosen in a config: its registry name and its validated parameters."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    params: ComponentConfig

    def build(self, registry: Registry | None = None, kind: str = "") -> Any:
        reg = registry or get_registry()
        cls = reg.get(kind, self.name)
        return cls(self.params)

    def dump(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump(mode="json")}


class RewardSpec(ComponentSpec):
    weight: float = 1.0
    alias: str | None = None

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out["weight"] = self.weight
        if self.alias:
            out["alias"] = self.alias
        return out


class PipelineConfig(BaseModel):
    """A validated pipeline. Build it with :func:`load_config` or :func:`parse_config`."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    model: ComponentSpec
    task: ComponentSpec
    sampler: ComponentSpec
    rewards: list[RewardSpec]
    advantage: ComponentSpec
    step_selector: ComponentSpec | None = None
    objective: ComponentSpec
    data_filter: ComponentSpec | None = None
    train: TrainConfig
    eval: EvalConfig
    source: str = ""

    def dump(self) -> dict[str, Any]:
        """The fully resolved config as plain data (written to every run directory)."""
        out: dict[str, Any] = {}
        for section in ("model", "task", "sampler", "advantage", "step_selector", "objective", "data_filter"):
            spec = getattr(self, section)
            if spec is not None:
                out[section] = spec.dump()
        out["rewards"] = [r.dump() for r in self.rewards]
        out["train"] = self.train.model_dump(mode="json")
        out["eval"] = self.eval.model_dump(mode="json")
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False)

    def replace(self, **overrides: Any) -> PipelineConfig:
        """A new config with dotted-path overrides applied and validated again."""
        raw = self.dump()
        apply_overrides(raw, overrides)
        return parse_config(raw, source=self.source)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_TOP_LEVEL = ("model", "task", "sampler", "rewards", "advantage", "step_selector", "objective", "data_filter", "train",
              "eval")
_REQUIRED = ("model", "task", "sampler", "rewards", "advantage", "objective")


def _loc(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(err: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    if kind == "extra_forbidden" and model is not None:
        if not model.model_fields:
            return "unknown field; this component takes no fields"
        return f"unknown field; allowed fields: {', '.join(model.model_fields)}"
    if kind == "missing":
        return "required field is missing"
    got = err.get("input")
    if kind not in ("missing",) and got is not None and not isinstance(got, (dict, list)):
        return f"{msg} (got {got!r})"
    return msg


def _validation_lines(exc: ValidationError, prefix: Sequence[Any], model: type[BaseModel] | None) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = list(prefix) + list(err.get("loc", ()))
        sub_model = model
        # Only the top-level model's field list is suggested; nested errors keep pydantic's text.
        if len(err.get("loc", ())) > 1:
            sub_model = None
        lines.append(f"{_loc(loc)}: {_describe(err, sub_model)}")
    return lines


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_component(
    section: str, raw: Any, registry: Registry, problems: list[str], path: list[Any], *, reward: bool = False
) -> ComponentSpec | None:
    kind = SECTION_KINDS[section]
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        problems.append(f"{_loc(path)}: expected a mapping with a `name` key (got {type(raw).__name__})")
        return None
    params = dict(raw)
    name = params.pop("name", None)
    if not isinstance(name, str) or not name:
        known = ", ".join(registry.names(kind)) or "(none registered)"
        problems.append(f"{_loc(path + ['name'])}: required; name a registered {kind}: {known}")
        return None
    extra: dict[str, Any] = {}
    if reward:
        for key in ("weight", "alias"):
            if key in params:
                extra[key] = params.pop(key)
        if "weight" in extra and not isinstance(extra["weight"], (int, float)):
            problems.append(f"{_loc(path + ['weight'])}: must be a number (got {extra['weight']!r})")
            return None
    if name not in registry.names(kind):
        known = registry.names(kind)
        problems.append(
            f"{_loc(path + ['name'])}: unknown {kind} {name!r}{_suggest(name, known)}; "
            f"known: {', '.join(known) or '(none registered)'}"
        )
        return None
    cls = registry.get(kind, name)
    try:
        validated = cls.Config.model_validate(params)
    except ValidationError as exc:
        problems.extend(_validation_lines(exc, path, cls.Config))
        return None
    if reward:
        return RewardSpec(name=name, params=validated, **extra)
    return ComponentSpec(name=name, params=validated)


def eval_sampler_config(sampler: ComponentSpec, eval_config: EvalConfig, registry: Registry, *,
                        gen_length: int | None = None) -> tuple[type, ComponentConfig]:
    """The evaluation sampler's class and validated config: the pipeline's sampler with the
    ``eval.sampler`` overrides, temperature 0 when ``eval.greedy``, ``gen_length`` when given.

    When ``eval.sampler`` names another sampler (``name: llada``), evaluation uses that sampler with
    its own defaults plus the other ``eval.sampler`` fields; only the answer's shape (``gen_length``,
    ``block_length``, ``steps``) and the sampling ``temperature`` (pass@k's; greedy evaluation sets
    0 anyway) are carried over from the training sampler. That holds evaluation fixed across
    pipelines that train with different samplers (``remask compare``).
    Raises :class:`ConfigError` with one line per problem, located under ``eval.sampler``."""
    own = dict(eval_config.sampler)
    name = str(own.pop("name", sampler.name))
    try:
        cls = registry.get("sampler", name)
    except RemaskError as exc:  # unknown name, with the known ones listed
        raise ConfigError([f"eval.sampler.name: {exc}"]) from None
    fields = cls.Config.model_fields
    base = sampler.params.model_dump()
    if name == sampler.name:
        params = base
    else:
        params = {k: base[k] for k in ("gen_length", "block_length", "steps", "temperature") if k in base and k in fields}
    params.update(own)
    if eval_config.greedy and "temperature" in fields:
        params["temperature"] = 0.0
    if gen_length is not None:
        if "gen_length" not in fields:
            raise ConfigError([f"eval.gen_lengths: sampler {name!r} has no gen_length field"])
        params["gen_length"] = gen_length
        if "block_length" in fields and params.get("block_length", 0) > gen_length:
            params["block_length"] = gen_length
    try:
        return cls, cls.Config.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(_validation_lines(exc, ["eval", "sampler"], cls.Config)) from None


def parse_config(raw: Any, *, source: str = "<config>", registry: Registry | None = None) -> PipelineConfig:
    """Validate plain data (as loaded from YAML). Raises :class:`ConfigError` listing every problem."""
    reg = registry or get_registry()
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the config must be a mapping of sections (got {type(raw).__name__})"])
    problems.extend(unknown_sections(raw))
    for key in _REQUIRED:
        if key not in raw or raw[key] is None:
            problems.append(f"{key}: required section is missing")
    built: dict[str, Any] = {}
    for section in ("model", "task", "sampler", "advantage", "objective", "step_selector", "data_filter"):
        if raw.get(section) is not None:
            built[section] = _parse_component(section, raw[section], reg, problems, [section])
    rewards_raw = raw.get("rewards")
    if rewards_raw is not None:
        if isinstance(rewards_raw, (str, Mapping)):
            rewards_raw = [rewards_raw]
        if not isinstance(rewards_raw, list) or not rewards_raw:
            problems.append("rewards: must be a non-empty list of {name, weight, ...}")
        else:
            specs = [
                _parse_component("rewards", r, reg, problems, ["rewards", i], reward=True)
                for i, r in enumerate(rewards_raw)
            ]
            labels = [s.alias or s.name for s in specs if s is not None]
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            if dupes:
                problems.append(f"rewards: {', '.join(dupes)} listed twice; give repeats distinct `alias` values")
            built["rewards"] = specs
    for section, model in (("train", TrainConfig), ("eval", EvalConfig)):
        try:
            built[section] = model.model_validate(raw.get(section) or {})
        except ValidationError as exc:
            problems.extend(_validation_lines(exc, [section], model))
    if not problems:
        problems.extend(_check_batch_arithmetic(built))
    if not problems:
        problems.extend(_check_reward_names(built))
    if not problems and "sampler" in built:  # evaluation's sampler, checked before any training
        try:
            eval_sampler_config(built["sampler"], built["eval"], reg)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return PipelineConfig(source=source, **built)


def _names_reward(annotation: Any, metadata: Sequence[Any] = ()) -> bool:
    """Whether a field's type is (or contains, e.g. ``RewardName | None``, ``list[RewardName]``) a RewardName."""
    if any(isinstance(m, RewardRef) for m in metadata):
        return True
    meta = getattr(annotation, "__metadata__", ())
    return any(isinstance(m, RewardRef) for m in meta) or any(_names_reward(a) for a in get_args(annotation))


def _reward_references(params: ComponentConfig) -> list[tuple[str, str]]:
    """``(field, reward label)`` for every value of a :data:`remask.RewardName` field of ``params``."""
    out = []
    for field, info in type(params).model_fields.items():
        if not _names_reward(info.annotation, info.metadata):
            continue
        value = getattr(params, field)
        for v in [value] if isinstance(value, str) else (value or ()):
            if isinstance(v, str):
                out.append((field, v))
    return out


def _check_reward_names(built: Mapping[str, Any]) -> list[str]:
    """Every RewardName field of every section names a reward of this pipeline (alias, else name)."""
    labels = [s.alias or s.name for s in built.get("rewards") or ()]
    located: list[tuple[str, ComponentSpec]] = [(section, built[section]) for section in SECTION_KINDS
                                                 if section != "rewards" and isinstance(built.get(section), ComponentSpec)]
    located += [(f"rewards[{i}]", spec) for i, spec in enumerate(built.get("rewards") or ())]
    problems = []
    for where, spec in located:
        for field, label in _reward_references(spec.params):
            if label not in labels:
                problems.append(f"{where}.{field}: no reward labelled {label!r}{_suggest(label, labels)} in this "
                                f"pipeline; rewards: {', '.join(labels)} (a reward's label is its alias, else its name)")
    return problems


def unknown_sections(raw: Mapping[str, Any]) -> list[str]:
    """One problem per top-level key that is no section of a pipeline (``trian:``), with a suggestion."""
    return [f"{key}: unknown section{_suggest(str(key), _TOP_LEVEL)}; sections: {', '.join(_TOP_LEVEL)}"
            for key in raw if key not in _TOP_LEVEL]


def _check_batch_arithmetic(built: Mapping[str, Any], num_processes: int = 1) -> list[str]:
    train: TrainConfig = built["train"]
    return check_batch_arithmetic(train, num_processes=num_processes,
                                  whole_groups=_objective_needs_groups(built.get("objective")))


def _objective_needs_groups(spec: ComponentSpec | None) -> bool:
    if spec is None:
        return False
    try:
        cls = get_registry().get("objective", spec.name)
    except Exception:  # noqa: BLE001
        return False
    return bool(getattr(cls, "requires_whole_groups", False))


def check_batch_arithmetic(train: TrainConfig, *, num_processes: int = 1, whole_groups: bool = False) -> list[str]:
    """Problems with the batch layout, each listing the values that would work.

    Rows per step = prompts_per_step x group_size must split evenly over processes without cutting
    a group, and each process's rows must split evenly into micro-batches (of whole groups when the
    objective compares completions of one prompt).
    """
    problems = []
    g = train.group_size
    if train.prompts_per_step % num_processes:
        valid = [n for n in range(num_processes, 4 * num_processes + 1, num_processes)]
        problems.append(
            f"train.prompts_per_step: {train.prompts_per_step} prompts cannot be split over {num_processes} "
            f"processes with whole groups on each; use a multiple of {num_processes} (e.g. {valid})"
        )
        return problems
    rows = train.prompts_per_step // num_processes * g
    mb = train.micro_batch_size
    if mb:
        unit = g if whole_groups else 1
        valid = [d for d in range(1, rows + 1) if rows % d == 0 and d % unit == 0]
        if rows % mb or mb % unit:
            why = " and a multiple of group_size (this objective compares rows of one group)" if whole_groups else ""
            what = (f"{mb} does not divide the {rows} rows per process" if rows % mb else
                    f"{mb} divides the {rows} rows per process but is not a multiple of group_size {g}")
            problems.append(
                f"train.micro_batch_size: {what} (prompts_per_step {train.prompts_per_step} x group_size {g} / "
                f"{num_processes} processes); it must divide them{why}; valid values: {valid}"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# YAML and overrides
# ---------------------------------------------------------------------------------------------


class OverrideText(str):
    """A value as typed after ``--section.field`` on the command line. :func:`apply_overrides` reads
    it by the target field's type: a text field (``str``, a ``Literal`` of strings) takes the text
    as typed (``--train.mixed_precision no`` is ``"no"``, not YAML 1.1's ``False``); any other
    field takes it as YAML (``0.02``, ``true``, ``[1, 2]``, ``null``)."""


_NULLS = ("null", "Null", "NULL", "~", "None", "none")


def _coerce(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _text_field(annotation: Any) -> tuple[bool, bool]:
    """(takes text as typed, accepts None) for a pydantic field annotation."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if annotation is str:
        return True, False
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation)), False
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        text = bool(rest) and all(_text_field(a)[0] for a in rest)
        return text, len(rest) < len(args)
    return False, False


def _target_field(raw: Mapping[str, Any], parts: Sequence[str], registry: Registry | None) -> Any:
    """The annotation of the field a dotted path names, or None when it cannot be told."""
    import typing

    section = parts[0]
    model: Any = None
    rest = list(parts[1:])
    if section == "train":
        model = TrainConfig
    elif section == "eval":
        model = EvalConfig
    elif section in SECTION_KINDS:
        node: Any = raw.get(section)
        if section == "rewards" and isinstance(node, list) and rest and rest[0].isdigit():
            node = node[int(rest[0])] if int(rest[0]) < len(node) else None
            rest = rest[1:]
        if rest in (["name"], ["alias"]):
            return str
        if isinstance(node, str):
            node = {"name": node}
        name = node.get("name") if isinstance(node, Mapping) else None
        if not isinstance(name, str):
            return None
        try:
            model = (registry or get_registry()).get(SECTION_KINDS[section], name).Config
        except Exception:  # noqa: BLE001 - an unknown component: validation reports it
            return None
    for i, part in enumerate(rest):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        if i == len(rest) - 1:
            return annotation
        nested = [a for a in (typing.get_args(annotation) or (annotation,)) if hasattr(a, "model_fields")]
        if not nested:
            return None
        model = nested[0]
    return None


def _typed_value(raw: Mapping[str, Any], parts: Sequence[str], text: str, registry: Registry | None) -> Any:
    annotation = _target_field(raw, parts, registry)
    takes_text, nullable = _text_field(annotation) if annotation is not None else (False, False)
    if not takes_text:
        return _coerce(text)
    if nullable and text in _NULLS:
        return None
    return str(text)


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], *,
                    registry: Registry | None = None) -> dict[str, Any]:
    """Set dotted paths in ``raw`` (``objective.beta``, ``rewards.0.weight``), in place. Values typed
    on the command line (:class:`OverrideText`) are read by the type of the field they set."""
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if isinstance(value, OverrideText):
            value = _typed_value(raw, parts, value, registry) if len(parts) > 1 else _coerce(value)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError([f"--{dotted}: {part!r} is not an index of {'.'.join(parts[:i]) or 'config'}"]) from None
                continue
            if not isinstance(node, dict):
                raise ConfigError([f"--{dotted}: {'.'.join(parts[:i])} is not a section"])
            if node.get(part) is None:
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError([f"--{dotted}: {last!r} is not an index"]) from None
        else:
            node[last] = value
    return raw


def parse_override_args(args: Sequence[str]) -> dict[str, Any]:
    """``["--objective.beta", "0.02", "--train.max_steps=5"]`` -> ``{"objective.beta": "0.02", ...}``,
    each value an :class:`OverrideText` that :func:`apply_overrides` reads by its field's type."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError([f"unexpected argument {arg!r}; overrides look like --section.field VALUE"])
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError([f"--{key}: missing value"])
            value = args[i + 1]
            i += 2
        if "." not in key and key not in _TOP_LEVEL:
            raise ConfigError([f"--{key}: overrides name a field path such as --objective.beta"])
        out[key] = OverrideText(value)
    return out


def read_yaml(path: str | Path) -> Any:
    """Load YAML, turning syntax errors into one line with file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a YAML file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset "
                           f"{exc.start}); a config is YAML text"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError([f"{where}: malformed YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: malformed YAML: {' '.join(str(exc).split())}"]) from None


def load_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None, *, registry: Registry | None = None
) -> PipelineConfig:
    """Read, override and validate a pipeline YAML file."""
    raw = read_yaml(path)
    if raw is None:
        raise ConfigError([f"{path}: the file is empty"])
    raw = copy.deepcopy(raw)
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the config must be a mapping of sections"])
        apply_overrides(raw, overrides, registry=registry)
    return parse_config(raw, source=str(path), registry=registry)
