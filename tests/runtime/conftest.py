"""Fixtures of the runtime tests."""

from tests.runtime.checkservers import sentinel

__all__ = ["sentinel"]
