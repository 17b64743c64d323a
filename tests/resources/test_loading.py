"""Loading resources: typed objects with defaults, located problems, cross-file checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetwave.resources.loading import (
    FleetDevice,
    check_fleet,
    load_paths,
    load_text,
    parse_fleet,
)
from fleetwave.resources.model import FailureAction, Rollout

MINIMAL = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata:
  name: agent-1-0-6
spec:
  component: agent
  version: "1.0.6"
  selector: {}
"""


def test_minimal_rollout_gets_every_default() -> None:
    result = load_text(MINIMAL, "r.yaml")
    assert result.problems == []
    [doc] = result.documents
    rollout = doc.resource
    assert isinstance(rollout, Rollout)
    spec = rollout.spec
    assert [s.percent for s in spec.strategy.steps] == [5, 25, 50, 100]
    assert spec.strategy.max_in_flight == 500
    assert spec.health.ack_timeout == timedelta(minutes=10)
    assert spec.failure_policy.action is FailureAction.PAUSE
    assert spec.failure_policy.min_sample == 5
    assert rollout.raw_spec["strategy"]["maxInFlight"] == 500
    assert rollout.source.path == "r.yaml" and rollout.source.line == 1


def test_times_and_durations_are_typed() -> None:
    text = MINIMAL + """\
  strategy:
    notBefore: "2026-12-01T02:00:00+01:00"
    window: {cron: "0 2 * * *", duration: 1h30m, timezone: Europe/Berlin}
"""
    [doc] = load_text(text, "r.yaml").documents
    assert isinstance(doc.resource, Rollout)
    strategy = doc.resource.spec.strategy
    assert strategy.not_before == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert strategy.window is not None and strategy.window.duration == timedelta(minutes=90)


@pytest.mark.parametrize(("value", "ok"), [
    pytest.param("2026-12-24T00:00:00Z", True, id="utc"),
    pytest.param("2026-12-24T02:00:00+01:00", True, id="offset"),
    pytest.param("2026-12-24T00:00:00.5Z", True, id="fraction"),
    pytest.param("2026-12-24", False, id="date-only"),
    pytest.param("2026-12-24T00:00:00", False, id="no-zone"),
    pytest.param("2026-13-24T00:00:00Z", False, id="month-13"),
    pytest.param("tomorrow", False, id="words"),
])
def test_times_must_be_rfc3339_with_a_zone(value: str, ok: bool) -> None:
    result = load_text(MINIMAL + f'  strategy: {{notBefore: "{value}"}}\n', "r.yaml")
    assert result.ok is ok
    if not ok:
        assert result.errors[0].field == "spec.strategy.notBefore"


@pytest.mark.parametrize(("fragment", "field", "says"), [
    pytest.param("  failurePolicy: {minSample: 0}\n", "spec.failurePolicy.minSample",
                 "below the minimum of 1", id="min-sample"),
    pytest.param("  failurePolicy: {maxFailurePercent: 101}\n",
                 "spec.failurePolicy.maxFailurePercent", "use 0 to 100", id="max-failure"),
    pytest.param("  strategy: {freezes: [{start: '2026-12-27T00:00:00Z', "
                 "end: '2026-12-24T00:00:00Z'}]}\n", "spec.strategy.freezes[0].end",
                 "end after it starts", id="freeze-backwards"),
    pytest.param("  strategy: {window: {cron: '0 2 * *', duration: 1h}}\n",
                 "spec.strategy.window.cron", "it has 4 fields, not 5", id="cron-4-fields"),
    pytest.param("  selector: {matchExpressions: [{key: env, operator: Exists, values: [a]}]}\n",
                 "spec.selector.matchExpressions[0].values", "takes no values",
                 id="exists-with-values"),
    pytest.param("  artifact: {url: x, sha256: ABC}\n", "spec.artifact.sha256",
                 "64 lower-case hex digits", id="sha256"),
    pytest.param("  artifact: {url: https://a/x.tgz}\n", "spec.artifact.sha256",
                 "'url' needs it", id="url-without-sha256"),
    pytest.param("  artifact: {digest: 'sha256:abc'}\n", "spec.artifact.digest",
                 "sha256: and the 64 lower-case hex digits", id="short-digest"),
    pytest.param("  artifact: {sha256: " + "a" * 64 + "}\n", "spec.artifact",
                 "needs one of: url, digest", id="nothing-to-fetch"),
])
def test_checks_beyond_the_schema(fragment: str, field: str, says: str) -> None:
    result = load_text(MINIMAL + fragment, "r.yaml")
    [error] = result.errors
    assert error.field == field
    assert says in error.message


def test_an_artifact_url_without_its_sha256_is_named_by_file_line_and_field() -> None:
    [error] = load_text(MINIMAL + "  artifact:\n    url: https://a/x.tgz\n", "r.yaml").errors
    # Line 10, `url:`: where the artifact's mapping starts, the place to add sha256.
    assert (error.file, error.line, error.field) == ("r.yaml", 10, "spec.artifact.sha256")


def test_an_image_digest_alone_is_an_artifact() -> None:
    digest = "sha256:" + "b" * 64
    [doc] = load_text(MINIMAL + f"  artifact: {{digest: '{digest}'}}\n", "r.yaml").documents
    assert isinstance(doc.resource, Rollout)
    assert doc.resource.spec.artifact is not None
    assert (doc.resource.spec.artifact.url, doc.resource.spec.artifact.digest) == (None, digest)


def test_policy_template_gets_the_same_step_checks() -> None:
    text = """\
apiVersion: fleetwave.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  imagePattern: "acme/app:*"
  template:
    strategy:
      steps: [{percent: 50}]
"""
    [error] = load_text(text, "p.yaml").errors
    assert (error.line, error.field) == (8, "spec.template.strategy.steps[0].percent")


def test_duplicate_names_across_files_are_errors_and_neither_copy_is_kept(
        tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    result = load_paths([tmp_path])
    [error] = result.errors
    assert (error.file, error.line, error.column) == (str(tmp_path / "b.yaml"), 4, 9)
    assert f"also defined at {tmp_path / 'a.yaml'}:4" in error.message
    assert result.documents == []


def test_a_later_document_after_a_yaml_error_is_not_lost_silently() -> None:
    result = load_text(MINIMAL + "---\nkey: [unclosed\n", "r.yaml")
    assert len(result.documents) == 1
    [error] = result.errors
    assert error.message.startswith("invalid YAML")


def test_parse_fleet_accepts_the_devices_command_output() -> None:
    fleet = parse_fleet({"items": [{"uuid": "d1", "labels": {"a": "b"},
                                    "versions": {"agent": "1.0.5"}}]})
    assert fleet == [FleetDevice("d1", {"a": "b"}, {"agent": "1.0.5"})]


def test_check_fleet_honours_exclude() -> None:
    text = MINIMAL + "  selector: {devices: [d1]}\n  exclude: {devices: [d1]}\n"
    result = load_text(text, "r.yaml")
    # Provably empty already, without a fleet.
    assert [w.field for w in result.warnings] == ["spec.selector.devices"]
    [warning] = check_fleet(result.documents, [FleetDevice("d1")])
    assert warning.field == "spec.selector" and warning.severity == "warning"


DOWNLOADS = MINIMAL + "  artifact: {url: 'https://a/x.tgz', sha256: '" + "a" * 64 + "'}\n"


@pytest.mark.parametrize(("strategy", "line", "field", "says"), [
    pytest.param("    download: {window: {cron: '0 0 * * *', duration: 2h}}\n", 11,
                 "spec.strategy.download", "needs strategy.window", id="no-install-window"),
    pytest.param("    window: {cron: '0 2 * * *', duration: 3h}\n"
                 "    download: {window: {cron: '0 0 * *', duration: 2h}}\n", 12,
                 "spec.strategy.download.window.cron", "4 fields, not 5", id="bad-cron"),
    pytest.param("    window: {cron: '0 2 * * *', duration: 3h}\n"
                 "    download: {window: {cron: '0 0 * * *', duration: 2h, "
                 "timezone: Europe/Berln}}\n", 12,
                 "spec.strategy.download.window.timezone", "not an IANA time zone",
                 id="bad-zone"),
    pytest.param("    window: {cron: '0 2 * * *', duration: 3h}\n"
                 "    download: {window: {cron: '0 0 * * *', duration: 0s}}\n", 12,
                 "spec.strategy.download.window.duration", "longer than 0s",
                 id="zero-duration"),
    pytest.param("    window: {cron: '0 2 * * *', duration: 3h}\n    download: {}\n", 12,
                 "spec.strategy.download.window", "required", id="download-without-window"),
])
def test_download_mistakes_are_named_by_file_line_and_field(
        strategy: str, line: int, field: str, says: str) -> None:
    [error] = load_text(DOWNLOADS + "  strategy:\n" + strategy, "r.yaml").errors
    assert (error.file, error.line, error.field) == ("r.yaml", line, field)
    assert says in error.message


def test_download_without_an_artifact_is_refused_but_a_policy_template_may_omit_it() -> None:
    text = MINIMAL + ("  strategy:\n    window: {cron: '0 2 * * *', duration: 3h}\n"
                      "    download: {window: {cron: '0 0 * * *', duration: 2h}}\n")
    [error] = load_text(text, "r.yaml").errors
    assert error.field == "spec.strategy.download" and "spec.artifact" in error.message
    [doc] = load_text(DOWNLOADS + ("  strategy:\n    window: {cron: '0 2 * * *', duration: 3h}\n"
                                   "    download: {window: {cron: '0 0 * * *', duration: 2h}}\n"),
                      "r.yaml").documents
    assert isinstance(doc.resource, Rollout)
    assert doc.resource.spec.strategy.download_window is not None
