"""Generate ``docs/api.md``, the plugin API reference, from the docstrings and shape comments in core.

    python -m remask._apidoc > docs/api.md

Everything comes from the code: a record's fields with their types and the shape comments written
beside them (``prompt_ids: Tensor  # [B, P] long``), every attribute an interface lets a component
set (the ``ClassVar`` declarations and their ``#:`` comments), every method's signature and
docstring, and every function ``remask.functional``, ``remask.likelihood`` and ``remask.trajectory``
export. ``tests/zoo/test_api_doc.py`` fails when the committed page differs from this output.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
from types import ModuleType
from typing import Any

from . import functional, interfaces, likelihood, records, trajectory

__all__ = ["api_reference"]

_FIELD = re.compile(r"^\s{4}(\w+)\s*:\s*([^=#]+?)\s*(?:=\s*([^#]+?))?\s*(?:#\s*(.*))?$")
_CLASSVAR_DOC = re.compile(r"^\s{4}#:\s?(.*)$")


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def _field_comments(cls: type) -> dict[str, tuple[str, str, str]]:
    """``name -> (annotation, default, comment)`` read from the class body's source lines."""
    out: dict[str, tuple[str, str, str]] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        doc = _CLASSVAR_DOC.match(line)
        if doc:
            pending.append(doc.group(1))
            continue
        m = _FIELD.match(line)
        if m and not line.strip().startswith(("def ", "class ", "@", "return")):
            name, ann, default, comment = m.groups()
            text = " ".join(pending + ([comment] if comment else []))
            out.setdefault(name, (ann.strip(), (default or "").strip(), text.strip()))
        if line.strip() and not doc:
            pending = []
    return out


def _record_section(cls: type, level: str = "###") -> list[str]:
    lines = [f"{level} `{cls.__name__}`", "", _doc(cls), ""]
    comments = _field_comments(cls)
    lines += ["| field | type | shape / meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        ann, default, comment = comments.get(f.name, (str(f.type), "", ""))
        if default:
            comment = f"{comment} (default `{default}`)".strip()
        lines.append(f"| `{f.name}` | `{_cell(ann)}` | {_cell(comment)} |")
    props = [(n, v) for n, v in vars(cls).items() if isinstance(v, property) and not n.startswith("_")]
    methods = [(n, v) for n, v in vars(cls).items()
               if inspect.isfunction(v) and not n.startswith("_")]
    if props:
        lines += ["", "Properties: " + ", ".join(
            f"`{n}`" + (f" ({_doc(v.fget).splitlines()[0]})" if _doc(v.fget) else "") for n, v in props)]
    for n, v in methods:
        lines += ["", f"- `{n}{inspect.signature(v)}`" + (f": {_doc(v).splitlines()[0]}" if _doc(v) else "")]
    return lines + [""]


def _signature(fn: Any) -> str:
    try:
        sig = str(inspect.signature(fn))
    except (TypeError, ValueError):  # pragma: no cover - builtins
        sig = "(...)"
    return sig


def _function_section(name: str, fn: Any, level: str = "####") -> list[str]:
    if inspect.isclass(fn) and dataclasses.is_dataclass(fn):
        return _record_section(fn, level)
    if not callable(fn):
        return [f"{level} `{name} = {fn!r}`", ""]
    doc = _doc(fn)
    return [f"{level} `{name}{_signature(fn)}`", "", doc, ""] if doc else [f"{level} `{name}{_signature(fn)}`", ""]


def _module_section(mod: ModuleType, title: str) -> list[str]:
    lines = [f"## `{mod.__name__}` — {title}", "", _doc(mod), ""]
    for name in mod.__all__:
        obj = getattr(mod, name)
        if isinstance(obj, ModuleType):
            continue
        lines += _function_section(name, obj)
    return lines


def _interface_section(cls: type) -> list[str]:
    lines = [f"### `{cls.__name__}`", "", _doc(cls), ""]
    comments = _field_comments(cls)
    attrs = []
    for klass in reversed(cls.__mro__):
        if klass in (object,) or not issubclass(klass, interfaces.Component):
            continue
        for name, ann in getattr(klass, "__annotations__", {}).items():
            if name.startswith("_") or name == "Config":
                continue
            attrs.append((name, klass))
    seen: set[str] = set()
    rows = []
    for name, klass in attrs:
        if name in seen:
            continue
        seen.add(name)
        ann, default, comment = _field_comments(klass).get(name, comments.get(name, ("", "", "")))
        value = getattr(cls, name, None)
        if isinstance(value, property):
            default = "(property)"
        elif name in vars(cls) or default:
            default = repr(value) if not default else default
        rows.append(f"| `{name}` | `{_cell(ann)}` | {_cell(default)} | {_cell(comment)} |")
    if rows:
        lines += ["| attribute | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for name, fn in vars(cls).items():
        if name.startswith("_") or not (inspect.isfunction(fn) or isinstance(fn, property)):
            continue
        target = fn.fget if isinstance(fn, property) else fn
        abstract = " *(abstract)*" if getattr(target, "__isabstractmethod__", False) else ""
        sig = "" if isinstance(fn, property) else _signature(target)
        lines += [f"- `{name}{sig}`{abstract}" + (f": {_doc(target)}" if _doc(target) else "").replace("\n", " "), ""]
    return lines


def api_reference() -> str:
    """The whole of ``docs/api.md`` as one string."""
    lines = [
        "# Plugin API reference",
        "",
        "<!-- Generated by `python -m remask._apidoc > docs/api.md`; do not edit by hand. "
        "tests/zoo/test_api_doc.py checks that it is current. -->",
        "",
        "What a plugin may use: everything `remask` exports (records, interfaces, `StepContext`) and the",
        "pure tensor functions of `remask.functional` and `remask.likelihood`. Shapes use the",
        "dimension names of `remask.records`: B rows, P prompt length, L completion length, T sampler",
        "steps, K selected steps, V vocabulary, N noisy views, N_B blocks.",
        "",
        "## Records (`remask.records`)",
        "",
        _doc(records),
        "",
    ]
    for name in ("Example", "PromptBatch", "Rollout", "Rewards", "StepSelection", "LossOutput"):
        lines += _record_section(getattr(records, name))
    lines += _function_section("take", records.take, "###")
    lines += ["## What the engine hands to components", ""]
    lines += _record_section(interfaces.StepContext)
    lines += _record_section(interfaces.DataFilterContext)
    lines += ["## Interfaces (`remask.interfaces`)", "", _doc(interfaces), ""]
    lines += _record_section(interfaces.ModelOutput)
    lines += _record_section(interfaces.ForwardPass)
    for name in ("Component", "DiffusionModel", "Sampler", "RewardModel", "StepSelector", "AdvantageEstimator",
                 "PolicyObjective", "LikelihoodEstimator", "Task", "DataFilter"):
        lines += _interface_section(getattr(interfaces, name))
    lines += ["### `RewardName` and `RewardRef`: config fields that name a reward", "", _doc(interfaces.RewardRef), ""]
    lines += _module_section(trajectory, "rebuilding sampler states")
    lines += _module_section(functional, "small pure tensor functions")
    lines += _module_section(likelihood, "likelihood building blocks")
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised by the staleness test through api_reference()
    sys.stdout.write(api_reference())
