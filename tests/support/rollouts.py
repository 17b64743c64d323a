"""Rollout files for tests that drive a real `fleetwave run` through its folder source.

One builder, so that a test spells out only what it is about (its strategy, its
selector) and every file is valid YAML by construction.
"""

from __future__ import annotations

from typing import Any

import yaml

FAST_HEALTH = {"ackTimeout": "30s", "updateTimeout": "60s", "stableFor": "1s"}
"""Simulated devices answer in seconds: short timeouts, a short soak."""


def rollout_yaml(name: str, strategy: dict[str, Any], *, version: str = "1.0.6",
                 component: str = "agent", match_labels: dict[str, str] | None = None,
                 health: dict[str, str] | None = None) -> str:
    """A Rollout as a folder source reads it (the simulator's devices run agent 1.0.5)."""
    spec: dict[str, Any] = {
        "component": component, "version": version,
        "selector": {"matchLabels": match_labels} if match_labels else {},
        "strategy": strategy, "health": health or FAST_HEALTH}
    return yaml.safe_dump({"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
                           "metadata": {"name": name}, "spec": spec}, sort_keys=False)
