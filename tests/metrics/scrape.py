"""Reading a live `/metrics` page the way Prometheus does: prometheus-client's own parser.

The helpers keep the tests' questions short: one sample's value, every series on the page,
and whether any label value names a device (its uuid or its ip).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
IPV4 = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


@dataclass(frozen=True)
class Page:
    """One scrape: family names and every sample, in the parser's terms."""

    families: tuple[str, ...]
    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample called `name` with exactly these labels, or None."""
        for s in self.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
        return None

    def values(self, name: str, by: str, **labels: str) -> dict[str, float]:
        """label `by` -> value, over the samples of `name` whose other labels match."""
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out[s.labels[by]] = float(s.value)
        return out

    def series(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for s in self.samples}

    def label_values(self) -> set[str]:
        return {v for s in self.samples for v in s.labels.values()}


def parse(text: str) -> Page:
    families = list(text_string_to_metric_families(text))
    return Page(families=tuple(f.name for f in families),
                samples=tuple(s for f in families for s in f.samples))


def scrape(base_url: str) -> Page:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        return parse(response.read().decode())


def device_identifiers_in(page: Page, devices: Iterable[Mapping[str, object]]) -> set[str]:
    """Label values that name a device: a uuid, an ip, or any known uuid or ip as a substring."""
    known = {str(d[k]) for d in devices for k in ("uuid", "ip") if d.get(k)}
    found = set()
    for value in page.label_values():
        if UUID.search(value) or IPV4.search(value) or any(k in value for k in known):
            found.add(value)
    return found
