"""The pluggy registry: discovery, validation at the door, error isolation."""

from __future__ import annotations

import json

import pytest

from remask import PolicyObjective, hookimpl
from remask.errors import UnknownComponentError
from remask.registry import Registry, get_registry
from remask.testing import FakeReward, FakeSampler, FakeTask, plugin_of, registered_plugin

from core_support import make_distribution, run_cli

GOOD = """
import remask
from pydantic import Field

class Toy(remask.RewardModel):
    '''Toy reward from a third-party distribution.'''
    name = "toy-reward"
    class Config(remask.ComponentConfig):
        bonus: float = Field(1.0, description="reward for every row")
    def score(self, *, prompts, completions, references):
        return remask.Rewards.from_scores(self.name, [self.config.bonus] * len(completions))

@remask.hookimpl
def register_rewards(register):
    register(Toy)
"""


def test_inline_plugin_registers_and_unregisters():
    reg = get_registry()
    assert "fake-sampler" not in reg.names("sampler")
    with registered_plugin(plugin_of(FakeSampler, FakeReward, FakeTask)):
        assert "fake-sampler" in reg.names("sampler")
        assert reg.get("reward", "fake-contains") is FakeReward
        info = reg.info("task", "fake-task")
        assert info.distribution == "test-dist" and info.plugin == "test-plugin"
    assert "fake-sampler" not in reg.names("sampler")


def test_unknown_name_lists_known_names():
    with registered_plugin(plugin_of(FakeSampler)):
        with pytest.raises(UnknownComponentError, match="known: .*fake-sampler"):
            get_registry().get("sampler", "nope")


def test_non_conforming_class_is_refused_with_its_plugin_named():
    class NotAReward:
        name = "bad"

    class Abstract(PolicyObjective):
        name = "half-done"

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register(NotAReward)

        @hookimpl
        def register_objectives(self, register):
            register(Abstract)

    reg = Registry()
    reg.register_plugin(Plugin(), name="sloppy", distribution="sloppy-dist", version="9.9")
    assert reg.names("reward") == [] and reg.names("objective") == []
    lines = [p.line() for p in reg.all_problems()]
    assert any("sloppy-dist 9.9" in l and "not a subclass of remask.RewardModel" in l for l in lines)
    assert any("half-done" in l and "does not implement" in l and "prepare" in l for l in lines)


def test_duplicate_name_names_both_distributions():
    reg = Registry()
    reg.register_plugin(plugin_of(FakeSampler), name="first", distribution="dist-a", version="1.0")
    reg.register_plugin(plugin_of(FakeSampler), name="second", distribution="dist-b", version="2.0")
    assert reg.names("sampler") == ["fake-sampler"]
    assert reg.info("sampler", "fake-sampler").distribution == "dist-a"
    (problem,) = reg.all_problems()
    assert "dist-a 1.0 already registered" in problem.message and "dist-b 2.0" in problem.message


def test_unknown_hook_is_refused_by_check_pending():
    class Typo:
        @hookimpl
        def register_objetcives(self, register):  # misspelt hook name
            pass

    reg = Registry()
    assert not reg.register_plugin(Typo(), name="typo", distribution="typo-dist", version="0.1")
    assert "register_objetcives" in reg.all_problems()[0].message


def test_a_raising_register_hook_does_not_hide_others():
    class Raises:
        @hookimpl
        def register_samplers(self, register):
            raise RuntimeError("boom")

    reg = Registry()
    reg.register_plugin(Raises(), name="raises", distribution="r", version="1")
    reg.register_plugin(plugin_of(FakeSampler), name="ok", distribution="o", version="1")
    assert reg.names("sampler") == ["fake-sampler"]
    assert "boom" in reg.all_problems()[0].message


def test_entry_point_plugins_allow_and_block_lists(fake_site, monkeypatch):
    make_distribution(fake_site, "toy-plugin", "0.3", {"toy": "toy_plugin"}, {"toy_plugin": GOOD})
    reg = Registry()
    reg.load_entry_points()
    info = reg.info("reward", "toy-reward")
    assert (info.distribution, info.version, info.plugin) == ("toy-plugin", "0.3", "toy")
    monkeypatch.setenv("REMASK_DISABLE_PLUGINS", "toy")
    reg2 = Registry()
    reg2.load_entry_points()
    assert "toy-reward" not in reg2.names("reward")
    monkeypatch.delenv("REMASK_DISABLE_PLUGINS")
    monkeypatch.setenv("REMASK_PLUGINS", "toy")
    reg3 = Registry()
    reg3.load_entry_points()
    assert "toy-reward" in reg3.names("reward")
    assert all(c.plugin == "toy" for c in reg3.components())


def test_broken_plugin_is_reported_and_others_still_load(fake_site):
    make_distribution(fake_site, "toy-plugin", "0.3", {"toy": "toy_plugin"}, {"toy_plugin": GOOD})
    make_distribution(fake_site, "broken-plugin", "1.2", {"broken": "broken_plugin"},
                      {"broken_plugin": "raise ImportError('missing dependency frobnicate')\n"})
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("reward", "toy-reward") in names
    (problem,) = [p for p in data["problems"] if p["plugin"] == "broken"]
    assert problem["distribution"] == "broken-plugin" and problem["version"] == "1.2"
    assert "frobnicate" in problem["message"]
    err_lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(err_lines) == 1 and "broken-plugin 1.2" in err_lines[0]
    assert "Traceback" not in proc.stderr


def test_plugin_reusing_a_builtin_name_is_refused(fake_site):
    builtin = [c for c in get_registry().components() if c.distribution == "remask"]
    assert builtin, "the built-in plugins registered nothing"
    target = builtin[0]
    # A clean clash: re-register the built-in class itself under a third-party distribution.
    clash = f"""
import remask
from {target.cls.__module__} import {target.cls.__qualname__} as Builtin

class Clash(Builtin):
    '''Same name as a built-in.'''

@remask.hookimpl
def {__import__('remask.registry', fromlist=['HOOK_FOR_KIND']).HOOK_FOR_KIND[target.kind]}(register):
    register(Clash)
"""
    make_distribution(fake_site, "zz-clash", "0.1", {"zz-clash": "zz_clash"}, {"zz_clash": clash})
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 2
    msgs = [p["message"] for p in json.loads(proc.stdout)["problems"]]
    assert any(target.name in m and "already registered" in m and "zz-clash 0.1" in m for m in msgs), msgs
