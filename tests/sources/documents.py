"""YAML documents the source tests commit, with known line numbers for error checks."""

from __future__ import annotations


def rollout(name: str, version: str, component: str = "agent") -> str:
    return (f"apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\n"
            f"spec:\n  component: {component}\n  version: \"{version}\"\n"
            "  selector: {matchLabels: {device_type: rpi4}}\n")


def broken_rollout(name: str) -> str:
    """A Rollout whose only error is `spec.strategy.steps[0].percent` on line 9."""
    return (f"apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\n"
            "spec:\n  component: agent\n  version: \"9.9.9\"\n  strategy:\n    steps:\n"
            "      - {percent: 250}\n  selector: {matchLabels: {device_type: rpi4}}\n")


BROKEN_LINE = 9
BROKEN_FIELD = "spec.strategy.steps[0].percent"


def inventory(name: str, devices: dict[str, dict[str, str]]) -> str:
    lines = ["apiVersion: fleetwave.io/v1alpha1", "kind: DeviceInventory",
             f"metadata: {{name: {name}}}", "spec:", "  devices:"]
    for uuid, labels in devices.items():
        lines.append(f"    - uuid: {uuid}")
        pairs = ", ".join(f'{k}: "{v}"' for k, v in labels.items())
        lines.append("      labels: {" + pairs + "}")
    return "\n".join(lines) + "\n"


def policy(name: str, pattern: str, *, commit_to: str | None = None,
           version_policy: str = "semver") -> str:
    text = (f"apiVersion: fleetwave.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}}}\n"
            f"spec:\n  imagePattern: \"{pattern}\"\n  versionPolicy: {version_policy}\n"
            "  template:\n    selector: {matchLabels: {device_type: rpi4}}\n"
            "    strategy: {steps: [{percent: 10}, {percent: 100}]}\n")
    if commit_to is not None:
        text += f"  commitTo: {{path: {commit_to}}}\n"
    return text
