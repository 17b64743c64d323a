"""The one duplicate-name rule (`resources.names.name_keeper`): sources and the operator."""

from __future__ import annotations

import pytest

from fleetwave.resources.names import name_keeper


@pytest.mark.parametrize(("claimants", "incumbent", "keeper"), [
    (["a.yaml"], None, "a.yaml"),                      # no conflict
    (["a.yaml", "b.yaml"], "b.yaml", "b.yaml"),        # the running one keeps it
    (["a.yaml", "b.yaml"], None, None),                # nobody guessed: neither runs
    (["a.yaml", "b.yaml"], "gone.yaml", None),         # the runner left: still no guess
    (["a.yaml", "a.yaml"], None, None),                # twice in one new file: neither
    (["a.yaml", "a.yaml"], "a.yaml", "a.yaml"),        # twice in the running file: it stays
    ([("ns1", "r"), ("ns2", "r")], ("ns1", "r"), ("ns1", "r")),  # operator: namespaces
])
def test_who_keeps_a_name(claimants: list[object], incumbent: object | None,
                          keeper: object | None) -> None:
    assert name_keeper(claimants, incumbent) == keeper
