"""The parser turns any bytes into a message about the topic's device or a counted drop."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.metrics import DROP_REASONS
from fleetwave.protocol.messages import Command, Online, ReportedState, Status, StatusType
from fleetwave.protocol.parsing import CommandError, Dropped, parse_command, parse_message
from fleetwave.protocol.topics import TopicKind, Topics, TopicTemplateError

T = Topics()
DEV = "3f2c1d9e-7a5b-4c8d-9e0f-1a2b3c4d5e6f"


def parse(kind: str, body: object | bytes, **kw: object) -> object:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_message(f"iot/device/{DEV}/agent/{kind}", payload, 1.5, T, **kw)  # type: ignore[arg-type]


class TestTopics:
    def test_builds_and_parses_each_kind(self) -> None:
        for kind in TopicKind:
            assert T.parse(T.topic(kind, DEV)) == (kind, DEV)

    def test_custom_prefix_and_template(self) -> None:
        t = Topics("fleet/eu", {TopicKind.STATUS: "{prefix}/status/{uuid}"})
        assert t.status("d1") == "fleet/eu/status/d1"
        assert t.parse("fleet/eu/status/d1") == (TopicKind.STATUS, "d1")
        assert t.filter(TopicKind.STATE) == "fleet/eu/+/agent/state"

    @pytest.mark.parametrize("topic", [
        pytest.param("iot/device/agent/status", id="no-uuid-level"),
        pytest.param("iot/device/a/b/agent/status", id="two-levels"),
        pytest.param("other/x/agent/status", id="other-prefix"),
        pytest.param("iot/device/x/agent/logs", id="other-kind"),
    ])
    def test_foreign_topics_are_not_ours(self, topic: str) -> None:
        assert T.parse(topic) is None

    def test_template_without_uuid_is_refused(self) -> None:
        with pytest.raises(TopicTemplateError):
            Topics(templates={TopicKind.STATUS: "{prefix}/status"})


class TestValidMessages:
    def test_status_with_correlation_id(self) -> None:
        msg = parse("status", {"type": "update_started", "correlation_id": "c1",
                               "current_version": "1.0.5", "target_version": "1.0.6",
                               "deployment_type": "docker", "timestamp": 1699564800000})
        assert msg == Status(device=DEV, type=StatusType.STARTED, correlation_id="c1",
                             received_at=1.5, timestamp=1699564800000, current_version="1.0.5",
                             target_version="1.0.6", deployment_type="docker")

    def test_legacy_status_without_correlation_id(self) -> None:
        msg = parse("status", {"type": "update_failed", "reason": "script_execution_failed",
                               "error": "Update script not found", "timestamp": 1})
        assert isinstance(msg, Status)
        assert msg.correlation_id is None
        assert msg.reason == "script_execution_failed"

    def test_state(self) -> None:
        msg = parse("state", {"uuid": DEV, "versions": {"agent": "1.0.5"},
                              "labels": {"env": "production"}, "deployment_type": "docker",
                              "ip": "10.0.0.1", "containers": [
                                  {"name": "agent", "image": "acme/agent:1.0.5",
                                   "running": False},
                                  {"name": "nodered", "status": "running"}]})
        assert isinstance(msg, ReportedState)
        assert msg.versions == {"agent": "1.0.5"}
        assert [c.running for c in msg.containers] == [False, True]

    @pytest.mark.parametrize("payload,online", [
        pytest.param(b'{"online": true, "timestamp": 5}', True, id="object"),
        pytest.param(b"false", False, id="bare-bool"),
    ])
    def test_online(self, payload: bytes, online: bool) -> None:
        msg = parse("online", payload)
        assert msg == Online(device=DEV, online=online, received_at=1.5,
                             timestamp=5 if online else None)


class TestDropped:
    @pytest.mark.parametrize("kind,payload,reason", [
        pytest.param("status", b"x" * 20000, "too_large", id="too-large"),
        pytest.param("status", b"{not json", "invalid_json", id="not-json"),
        pytest.param("status", b"\xff\xfe\x00", "invalid_json", id="not-utf8"),
        pytest.param("state", b"", "invalid_json", id="empty"),
        pytest.param("status", b"[1, 2]", "invalid_schema", id="not-object"),
        pytest.param("status", b'{"type": "update_exploded"}', "invalid_schema",
                     id="unknown-type"),
        pytest.param("status", b'{"type": "update_progress", "percent": 101}',
                     "invalid_schema", id="percent-range"),
        pytest.param("status", b'{"type": "update_failed", "exit_code": "one"}',
                     "invalid_schema", id="exit-code-type"),
        pytest.param("state", b'{"labels": {}}', "invalid_schema", id="no-versions"),
        pytest.param("state", b'{"versions": {"agent": 5}}', "invalid_schema",
                     id="version-not-string"),
        pytest.param("state", b'{"uuid": "someone-else", "versions": {}}', "uuid_mismatch",
                     id="uuid-mismatch"),
        pytest.param("online", b'{"online": "yes"}', "invalid_schema", id="online-type"),
        pytest.param("status", b"[" * 5000 + b"]" * 5000, "invalid_json", id="deep-nesting"),
    ])
    def test_reason(self, kind: str, payload: bytes, reason: str) -> None:
        result = parse(kind, payload)
        assert isinstance(result, Dropped)
        assert result.reason == reason
        assert result.device == DEV

    def test_unknown_topic(self) -> None:
        result = parse_message("iot/device/x/agent/update", b"{}", 0.0, T)
        assert result == Dropped("unknown_topic", None, "topic 'iot/device/x/agent/update'")

    def test_reasons_are_metric_labels(self) -> None:
        reasons = {"too_large", "invalid_json", "invalid_schema", "uuid_mismatch",
                   "unknown_topic"}
        assert reasons <= set(DROP_REASONS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(["type", "uuid", "versions", "labels", "containers",
                                       "online", "percent", "correlation_id", "timestamp",
                                       "name", "running", "exit_code"]) | st.text(max_size=5),
                      children, max_size=6),
    max_leaves=30)
status_types = st.sampled_from([t.value for t in StatusType])
topics = st.sampled_from([T.status(DEV), T.state(DEV), T.online(DEV), T.update(DEV),
                          "iot/device//agent/status", "x"]) | st.text(max_size=40)


class TestNeverRaises:
    @settings(max_examples=400, deadline=None)
    @given(topic=topics, payload=st.binary(max_size=300))
    def test_arbitrary_bytes(self, topic: str, payload: bytes) -> None:
        result = parse_message(topic, payload, 0.0, T)
        assert isinstance(result, (Status, ReportedState, Online, Dropped))

    @settings(max_examples=400, deadline=None)
    @given(topic=topics, body=json_values, status_type=status_types)
    def test_arbitrary_json(self, topic: str, body: object, status_type: str) -> None:
        if isinstance(body, dict) and "type" in body:
            body["type"] = status_type  # reach deeper into the status schema too
        result = parse_message(topic, json.dumps(body).encode(), 0.0, T)
        assert isinstance(result, (Status, ReportedState, Online, Dropped))
        if not isinstance(result, Dropped):
            assert result.device == DEV  # a message is only ever about its topic's device


class TestCommands:
    def test_round_trip(self) -> None:
        cmd = Command(action="update", component="agent", version="1.0.6", correlation_id="c1",
                      timestamp=7, scheduled_time="2030-01-01T02:00:00Z", force=True,
                      artifact_url="https://x/a.tgz", artifact_sha256="ab" * 32)
        assert parse_command(cmd.to_payload()) == cmd

    @pytest.mark.parametrize("payload", [b"nope", b"[]", b'{"action": "explode"}',
                                         b'{"action": "update"}',
                                         b'{"action": "update", "version": "1", "force": 1}'])
    def test_invalid(self, payload: bytes) -> None:
        with pytest.raises(CommandError):
            parse_command(payload)
