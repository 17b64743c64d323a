"""Fixtures of the multi-process tests (tests/replicas/cluster.py)."""

from tests.replicas.cluster import recorder

__all__ = ["recorder"]
