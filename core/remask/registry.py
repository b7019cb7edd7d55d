"""The component registry: pluggy plugins found through the ``remask`` entry-point group.

This module is the only place that calls ``pm.hook``. Core code asks the :class:`Registry` for
components by kind and name (``registry.get("objective", "grpo")``) and never sees pluggy.

Loading validates at the door:

* ``REMASK_PLUGINS=a,b`` loads only the named entry points, ``REMASK_DISABLE_PLUGINS=x`` skips some;
* a plugin that fails to import is recorded with its distribution name and version, and every other
  plugin still loads;
* ``pm.check_pending()`` refuses hook implementations with unknown names;
* every registered class is type-checked against its interface (subclass, ``name``, a pydantic
  ``Config`` with ``extra="forbid"``, not abstract);
* a name registered twice for the same kind is refused and both distributions are named.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .errors import PluginError, UnknownComponentError
from .interfaces import COMPONENT_KINDS, Component

__all__ = ["Registry", "ComponentInfo", "PluginProblem", "get_registry", "reset_registry", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "remask"
BUILTIN_DISTRIBUTION = "remask"

#: kind -> the register_* hook that declares it
HOOK_FOR_KIND: dict[str, str] = {
    "model": "register_models",
    "sampler": "register_samplers",
    "objective": "register_objectives",
    "advantage": "register_advantage_estimators",
    "reward": "register_rewards",
    "step_selector": "register_step_selectors",
    "task": "register_tasks",
    "likelihood": "register_likelihood_estimators",
    "data_filter": "register_data_filters",
}

C = TypeVar("C", bound=Component)


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component, as ``remask plugins`` lists it."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str
    version: str

    @property
    def summary(self) -> str:
        """The docstring's first paragraph on one line (a first sentence may wrap)."""
        doc = inspect.getdoc(self.cls) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class PluginProblem:
    """A plugin (or one thing it registered) that was refused, and why."""

    plugin: str
    distribution: str
    version: str
    message: str

    def line(self) -> str:
        where = f"{self.distribution} {self.version}".strip() or "?"
        return f"plugin {self.plugin!r} ({where}): {self.message}"


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class Registry:
    """Typed facade over the pluggy plugin manager."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("remask")
        self.pm.add_hookspecs(hookspecs)
        self._components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in COMPONENT_KINDS}
        self._origin: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.problems: list[PluginProblem] = []
        self._collected = False

    # -- loading ---------------------------------------------------------------------------

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import and register every entry point of ``group``, honouring the env allow/block lists."""
        from .environment import namespace_shadowing

        shadow = namespace_shadowing()
        if shadow:
            self.problems.append(PluginProblem("remask", "remask", "?", shadow))
        allow = _env_list("REMASK_PLUGINS")
        block = _env_list("REMASK_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        entry_points = sorted(md.entry_points(group=group), key=lambda e: e.name)
        for ep in entry_points:
            if ep.name in seen:
                continue
            seen.add(ep.name)
            if (allow is not None and ep.name not in allow) or ep.name in block:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            try:
                module = ep.load()
            except BaseException as exc:  # a plugin must never take the others down
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.problems.append(
                    PluginProblem(ep.name, dist, version, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                )
                continue
            self.register_plugin(module, name=ep.name, distribution=dist, version=version)
        unknown = sorted((allow or set()) - seen)
        if unknown:  # a typo in the allow list must not silently run without the plugin
            known = ", ".join(sorted(seen)) or "(none installed)"
            self.problems.append(PluginProblem(
                unknown[0], "REMASK_PLUGINS", "", f"names {', '.join(map(repr, unknown))}, which no installed "
                f"distribution provides as a {group!r} entry point; installed: {known}"))

    def register_plugin(self, plugin: Any, *, name: str, distribution: str = "", version: str = "") -> bool:
        """Register one plugin object (module or instance). Returns False if it was refused."""
        if self.pm.has_plugin(name):
            self.problems.append(
                PluginProblem(name, distribution, version, f"a plugin named {name!r} is already loaded")
            )
            return False
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self.problems.append(PluginProblem(name, distribution, version, f"invalid hook implementation: {exc}"))
            return False
        self._origin[name] = (distribution, version)
        self._collected = False
        return True

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self._origin.pop(name, None)
        self._collected = False

    # -- collection: the only calls of pm.hook.* ---------------------------------------------

    def _collect(self) -> None:
        if self._collected:
            return
        for kind in self._components:
            self._components[kind] = {}
        # Problems found while collecting are recomputed each time; loading problems stay.
        self.problems = [p for p in self.problems if not p.message.startswith("registered ")]
        for kind, hook_name in HOOK_FOR_KIND.items():
            caller = getattr(self.pm.hook, hook_name)
            # Call each implementation on its own, so that every registration is attributed to
            # its plugin and one raising plugin does not hide the others.
            # Registration order, built-in plugins (distribution "remask") first, so that a third
            # party can never shadow a built-in name by sorting earlier.
            impls = sorted(caller.get_hookimpls(),
                           key=lambda i: self._origin.get(i.plugin_name, ("", ""))[0] != BUILTIN_DISTRIBUTION)
            for impl in impls:
                plugin_name = impl.plugin_name
                dist, version = self._origin.get(plugin_name, ("", ""))

                def register(cls: Any, name: str | None = None, *, _kind=kind, _p=plugin_name,
                             _d=dist, _v=version) -> None:
                    self._add(_kind, cls, name, _p, _d, _v)

                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
                    self.problems.append(
                        PluginProblem(plugin_name, dist, version,
                                      f"registered nothing: {hook_name} raised {type(exc).__name__}: {exc}")
                    )
        self._collected = True

    def _add(self, kind: str, cls: Any, name: str | None, plugin: str, dist: str, version: str) -> None:
        interface = COMPONENT_KINDS[kind]

        def refuse(msg: str) -> None:
            self.problems.append(PluginProblem(plugin, dist, version, f"registered {msg}"))

        label = getattr(cls, "__name__", repr(cls))
        if isinstance(getattr(cls, "name", None), str):
            label = f"{cls.name!r} ({label})"
        if not (inspect.isclass(cls) and issubclass(cls, interface)):
            refuse(f"{label} as a {kind}, but it is not a subclass of remask.{interface.__name__}")
            return
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            refuse(f"{kind} {label}, which does not implement: {missing}")
            return
        name = name or getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            refuse(f"{kind} {label} without a name (set the class attribute `name`)")
            return
        config = getattr(cls, "Config", None)
        if not (inspect.isclass(config) and issubclass(config, BaseModel)):
            refuse(f"{kind} {name!r} whose Config is not a pydantic model")
            return
        if config.model_config.get("extra") != "forbid":
            refuse(f"{kind} {name!r} whose Config does not forbid unknown fields (extra='forbid')")
            return
        existing = self._components[kind].get(name)
        if existing is not None:
            refuse(
                f"{kind} {name!r}, which {existing.distribution or existing.plugin} "
                f"{existing.version} already registered; names must be unique "
                f"(this one comes from {dist or plugin} {version})"
            )
            return
        self._components[kind][name] = ComponentInfo(kind, name, cls, plugin, dist, version)

    # -- queries -------------------------------------------------------------------------------

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Every registered component (of one kind), sorted by kind then name."""
        self._collect()
        kinds: Iterable[str] = [kind] if kind else self._components.keys()
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def names(self, kind: str) -> list[str]:
        self._collect()
        return sorted(self._components[kind])

    def info(self, kind: str, name: str) -> ComponentInfo:
        self._collect()
        if kind not in self._components:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds are {', '.join(self._components)}")
        try:
            return self._components[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "(none registered)"
            raise UnknownComponentError(f"unknown {kind} {name!r}; known: {known}") from None

    def get(self, kind: str, name: str) -> type[Component]:
        """The registered class for ``kind``/``name``; :class:`UnknownComponentError` lists the names."""
        return self.info(kind, name).cls

    def all_problems(self) -> list[PluginProblem]:
        self._collect()
        return list(self.problems)

    def raise_problems(self) -> None:
        """Raise a :class:`PluginError` describing the first refused plugin, if any."""
        problems = self.all_problems()
        if problems:
            p = problems[0]
            more = f" (and {len(problems) - 1} more problem(s); `remask plugins` lists them)" if len(problems) > 1 else ""
            hint = "" if p.distribution == "REMASK_PLUGINS" else f"; disable it with REMASK_DISABLE_PLUGINS={p.plugin}"
            raise PluginError(
                f"{p.line()}{more}{hint}",
                plugin=p.plugin, distribution=p.distribution,
            )

    # -- lifecycle hooks -------------------------------------------------------------------------

    def _lifecycle(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook; an exception in a plugin becomes a :class:`PluginError` naming it."""
        caller = getattr(self.pm.hook, hook_name)
        try:
            caller(**kwargs)
        except Exception as exc:
            plugin = _culprit(exc, caller.get_hookimpls())
            if plugin is None:
                raise
            dist, version = self._origin.get(plugin, ("?", "?"))
            raise PluginError(
                f"plugin {plugin!r} ({dist} {version}) raised in {hook_name}: {type(exc).__name__}: {exc}; "
                f"disable it with REMASK_DISABLE_PLUGINS={plugin}",
                plugin=plugin, distribution=dist,
            ) from exc

    def after_rollout(self, *, rollout: Any, rewards: Any, step: int) -> None:
        self._lifecycle("after_rollout", rollout=rollout, rewards=rewards, step=step)

    def after_step(self, *, step: int, metrics: dict[str, float]) -> None:
        self._lifecycle("after_step", step=step, metrics=metrics)

    def on_train_end(self, *, output_dir: str, metrics: dict[str, float]) -> None:
        self._lifecycle("on_train_end", output_dir=output_dir, metrics=metrics)


def _culprit(exc: BaseException, hookimpls: Sequence[Any]) -> str | None:
    """The name of the plugin whose hook implementation raised ``exc`` (found in its traceback)."""
    codes = {impl.function.__code__: impl.plugin_name for impl in hookimpls
             if hasattr(impl.function, "__code__")}
    tb = exc.__traceback__
    found = None
    while tb is not None:  # the outermost hook frame: the implementation pluggy called
        name = codes.get(tb.tb_frame.f_code)
        if name is not None and found is None:
            found = name
        tb = tb.tb_next
    return found


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loading entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests; after changing REMASK_PLUGINS)."""
    global _REGISTRY
    _REGISTRY = None
