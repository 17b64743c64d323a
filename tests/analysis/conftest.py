"""One metrics page and one Prometheus scraping it for the whole directory (starting
Prometheus and its first scrape take seconds); a test that stops Prometheus starts its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.analysis.prometheus import MetricsPage, Prometheus

VALUES = {"app_good_ratio": 0.01, "app_bad_ratio": 0.5, "app_flip": 1.0,
          'app_series{site="a"}': 1.0, 'app_series{site="b"}': 2.0}
"""What the page serves unless a test changes it (only app_flip is changed)."""


@pytest.fixture(scope="package")
def page() -> Iterator[MetricsPage]:
    served = MetricsPage()
    served.values.update(VALUES)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="package")
def prometheus(page: MetricsPage, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    running = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{page.port}")
    running.start()
    try:
        running.wait_for_sample("app_good_ratio")
        yield running
    finally:
        running.stop()
