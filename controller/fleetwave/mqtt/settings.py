"""Settings of the controller's broker connection, one dataclass the CLI fills from flags and
environment (`--broker`, `FLEETWAVE_BROKER_USERNAME`/`_PASSWORD`, `--topic-prefix`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class BrokerUrlError(ValueError):
    """A `--broker` value that is not `mqtt://host[:port]` or `mqtts://host[:port]`."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host:1883` (plain), `mqtts://host:8883` (TLS); credentials in the URL are
    accepted but the environment variables are the documented way."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BrokerUrlError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    if not parts.hostname:
        raise BrokerUrlError(f"broker URL has no host: {url!r}")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL has an invalid port: {url!r}") from exc
    return BrokerAddress(host=parts.hostname, port=port, tls=tls,
                         username=unquote(parts.username) if parts.username else None,
                         password=unquote(parts.password) if parts.password else None)


@dataclass(frozen=True)
class MqttSettings:
    """How the controller connects; every field has a flag or an environment variable."""

    url: str = "mqtt://127.0.0.1:1883"
    """`mqtt://host:port` or `mqtts://host:port` (TLS)."""
    username: str | None = None
    password: str | None = None
    client_id: str = "fleetwave-controller"
    """Must be stable across restarts: the broker keeps the persistent session (and the status
    queued while the controller was away) under this id. Give each replica its own."""
    topic_prefix: str = "iot/device"
    shared_group: str | None = None
    """With several replicas: status is subscribed as `$share/<group>/...` so the broker
    spreads it over them. State and online stay plain subscriptions, because MQTT 5 sends no
    retained messages to shared subscriptions and retained state is how we resynchronise."""
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    session_expiry: int = 86400
    """Seconds the broker keeps our session (and queues status) while we are away: one day
    covers a long outage; beyond it retained state resynchronises us."""
    keepalive: int = 30
    """Seconds; a dead connection is noticed within 1.5x this."""
    max_payload: int = 16384
    """Bytes; larger device messages are dropped as `too_large`."""
    reconnect_min: float = 0.5
    """Seconds before the first reconnect attempt; doubles per failure up to `reconnect_max`,
    plus random jitter so a fleet of replicas does not reconnect in lockstep."""
    reconnect_max: float = 30.0
    batch_max: int = 500
    """Messages handed to the callback at once (the store writes one transaction per batch)."""
    batch_delay: float = 0.05
    """Seconds the first message of a batch may wait for others (latency vs. transactions)."""
    publish_window: int = 1000
    """Unacknowledged publishes at most: paho's 16-bit message ids wrap after 65,535 and then
    silently overwrite unacknowledged messages (TOOLING.md); 1,000 keeps throughput."""
    drop_log_interval: float = 60.0
    """Seconds between two log lines about the same device's dropped messages."""

    def address(self) -> BrokerAddress:
        return parse_broker_url(self.url)
