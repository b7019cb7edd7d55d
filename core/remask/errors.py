"""Errors meant for people. The CLI prints each as one line and exits with code 2."""

from __future__ import annotations


class RemaskError(Exception):
    """A user-facing error: bad input, a bad config, a broken plugin. Never a remask bug."""

    exit_code = 2


class ConfigError(RemaskError):
    """The pipeline config is malformed or invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(RemaskError):
    """A plugin could not be loaded or registered something invalid."""

    def __init__(self, message: str, *, plugin: str = "", distribution: str = "") -> None:
        self.plugin = plugin
        self.distribution = distribution
        super().__init__(message)


class UnknownComponentError(RemaskError):
    """A config names a component that no loaded plugin registered."""
