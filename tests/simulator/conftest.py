"""The simulator is tested with the controller's link: share its helpers."""

from tests.mqtt.conftest import metrics

__all__ = ["metrics"]
