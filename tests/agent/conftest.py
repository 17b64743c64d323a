"""Fixtures of the agent tests: `world` (tests.agent.world) is a broker, a signing key, a
controller-side client and an artifact server, torn down after each test."""

from tests.agent.world import world

__all__ = ["world"]
