"""The controller's MQTT connection: ingest of device messages, publishing of commands.

`MqttLink` is the controller's side; `fleetwave.mqtt.broker` renders the Mosquitto
configuration fleetwave ships and runs a broker for tests and the demo.
"""

from fleetwave.mqtt.link import MqttLink, OnMessages
from fleetwave.mqtt.settings import BrokerUrlError, MqttSettings, parse_broker_url

__all__ = ["BrokerUrlError", "MqttLink", "MqttSettings", "OnMessages", "parse_broker_url"]
