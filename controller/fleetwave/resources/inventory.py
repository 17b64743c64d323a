"""The one rule for device labels: DeviceInventory documents, then what the device reports.

An operator's inventory is the truth about a device (its site, its owner, its
ring); a device's own report is a hint. So inventory labels win over reported ones,
and among several DeviceInventory documents a later one (in the order the caller
gives: file order for a folder or git source, (namespace, name) for the operator)
wins over an earlier one. The engine, `fleetwave plan` and both sources call these
two functions, so "which labels does this device have" has one answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def merge_inventories(documents: Iterable[Mapping[str, Mapping[str, str]]],
                      ) -> dict[str, dict[str, str]]:
    """uuid -> labels from DeviceInventory documents' `labels`, a later document winning.

    >>> merge_inventories([{"d1": {"site": "a", "ring": "1"}}, {"d1": {"site": "b"}}])
    {'d1': {'site': 'b', 'ring': '1'}}
    """
    merged: dict[str, dict[str, str]] = {}
    for labels_by_device in documents:
        for uuid, labels in labels_by_device.items():
            merged.setdefault(uuid, {}).update(labels)
    return merged


def device_labels(reported: Mapping[str, str], inventory: Mapping[str, str] | None,
                  ) -> dict[str, str]:
    """A device's labels: what it reports, overridden by its inventory.

    >>> device_labels({"site": "self", "type": "rpi4"}, {"site": "berlin"})
    {'site': 'berlin', 'type': 'rpi4'}
    """
    labels = dict(reported)
    if inventory:
        labels.update(inventory)
    return labels
