"""Fixtures of the core tests."""

from core_support import fake_site  # noqa: F401  (fixture)
