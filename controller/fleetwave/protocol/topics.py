"""Topic names of the device protocol, built from configurable templates.

Operators with an existing broker layout replace the prefix (`--topic-prefix`) or whole
templates; the rest of fleetwave only asks "which device and which kind is this topic" and
"which topic carries this device's commands", so the layout lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class TopicKind(StrEnum):
    UPDATE = "update"
    STATUS = "status"
    STATE = "state"
    ONLINE = "online"


DEFAULT_PREFIX = "iot/device"
DEFAULT_TEMPLATES: dict[TopicKind, str] = {
    TopicKind.UPDATE: "{prefix}/{uuid}/agent/update",
    TopicKind.STATUS: "{prefix}/{uuid}/agent/status",
    TopicKind.STATE: "{prefix}/{uuid}/agent/state",
    TopicKind.ONLINE: "{prefix}/{uuid}/agent/online",
}

_FORBIDDEN_IN_UUID = frozenset("/+#\x00")


class TopicTemplateError(ValueError):
    """A template that cannot name one device per topic (missing or repeated `{uuid}`)."""


@dataclass(frozen=True)
class _Split:
    head: str
    tail: str


@dataclass(frozen=True)
class Topics:
    """Builds and parses the four topics of each device.

    >>> t = Topics()
    >>> t.status("abc")
    'iot/device/abc/agent/status'
    >>> t.parse("iot/device/abc/agent/state")
    (<TopicKind.STATE: 'state'>, 'abc')
    >>> t.filter(TopicKind.STATUS)
    'iot/device/+/agent/status'
    """

    prefix: str = DEFAULT_PREFIX
    templates: dict[TopicKind, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    _splits: tuple[tuple[TopicKind, _Split], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        splits: list[tuple[TopicKind, _Split]] = []
        for kind in TopicKind:
            template = self.templates.get(kind, DEFAULT_TEMPLATES[kind])
            rendered = template.replace("{prefix}", self.prefix.rstrip("/"))
            if rendered.count("{uuid}") != 1:
                raise TopicTemplateError(
                    f"topic template for {kind.value!r} must contain {{uuid}} exactly once: "
                    f"{template!r}")
            head, tail = rendered.split("{uuid}")
            if (head and not head.endswith("/")) or (tail and not tail.startswith("/")):
                raise TopicTemplateError(
                    f"{{uuid}} must be a whole topic level in {template!r}")
            if any(c in head + tail for c in "+#"):
                raise TopicTemplateError(f"topic template may not contain wildcards: {template!r}")
            splits.append((kind, _Split(head, tail)))
        heads_tails = {(s.head, s.tail) for _, s in splits}
        if len(heads_tails) != len(splits):
            raise TopicTemplateError("two topic kinds share one template")
        object.__setattr__(self, "_splits", tuple(splits))

    def topic(self, kind: TopicKind, device: str) -> str:
        for k, s in self._splits:
            if k is kind:
                return f"{s.head}{device}{s.tail}"
        raise KeyError(kind)  # pragma: no cover - every kind has a split

    def update(self, device: str) -> str:
        return self.topic(TopicKind.UPDATE, device)

    def status(self, device: str) -> str:
        return self.topic(TopicKind.STATUS, device)

    def state(self, device: str) -> str:
        return self.topic(TopicKind.STATE, device)

    def online(self, device: str) -> str:
        return self.topic(TopicKind.ONLINE, device)

    def filter(self, kind: TopicKind) -> str:
        """The subscription filter for `kind` on every device (`+` in the uuid level)."""
        return self.topic(kind, "+")

    def parse(self, topic: str) -> tuple[TopicKind, str] | None:
        """(kind, device uuid) of a concrete topic, or None when it is none of ours."""
        for kind, s in self._splits:
            if topic.startswith(s.head) and topic.endswith(s.tail):
                end = len(topic) - len(s.tail)
                if end <= len(s.head):
                    continue
                device = topic[len(s.head):end]
                if _FORBIDDEN_IN_UUID.isdisjoint(device):
                    return kind, device
        return None
