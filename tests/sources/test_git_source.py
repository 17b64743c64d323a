"""The git source against real repositories served by git daemon, smart HTTP and file://."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from fleetwave.metrics import build_metrics
from fleetwave.sources.base import Backoff, SourceSnapshot
from fleetwave.sources.git import GitCredentials, GitSource
from fleetwave.sources.pushes import GitPush
from tests.sources.documents import BROKEN_FIELD, BROKEN_LINE, broken_rollout, inventory, rollout
from tests.support.git import BareRepo, GitDaemon, GitHttp

TRANSPORTS = ["daemon", "http", "file"]


@pytest.fixture(params=TRANSPORTS)
def remote_url(request: pytest.FixtureRequest, git_repo: BareRepo) -> str:
    """The same repository over each transport the source supports."""
    if request.param == "daemon":
        daemon: GitDaemon = request.getfixturevalue("git_daemon")
        return daemon.url()
    if request.param == "http":
        http: GitHttp = request.getfixturevalue("git_http")
        return http.url()
    return git_repo.file_url


async def _next(queue: asyncio.Queue[SourceSnapshot], *, until: float = 5.0,
                revision: str | None = None, error: bool | None = None) -> SourceSnapshot:
    """The first delivered snapshot matching, or fail after `until` seconds."""
    async with asyncio.timeout(until):
        while True:
            snap = await queue.get()
            if revision is not None and snap.revision != revision:
                continue
            if error is not None and (snap.error is not None) != error:
                continue
            return snap


class Running:
    """A source's `run` loop in a task, its snapshots in a queue; stopped on exit."""

    def __init__(self, source: GitSource) -> None:
        self.source = source
        self.queue: asyncio.Queue[SourceSnapshot] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.source.run(self.queue.put_nowait, self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        async with asyncio.timeout(5):
            await self.task


class TestNewCommits:
    async def test_first_sync_reads_rollouts_with_revision_and_path(
            self, git_repo: BareRepo, remote_url: str, tmp_path: Path) -> None:
        rev = git_repo.commit({"rollouts/agent.yaml": rollout("agent-1-0-6", "1.0.6")})
        source = GitSource(remote_url, workdir=tmp_path / "work")
        snap = await source.sync()
        assert snap.error is None and snap.ok
        assert snap.revision == rev
        ro = snap.rollouts["agent-1-0-6"]
        assert ro.spec.version == "1.0.6"
        assert (ro.source.kind, ro.source.revision, ro.source.path) == \
            ("git", rev, "rollouts/agent.yaml")

    async def test_new_rollout_appears_within_one_poll_interval(
            self, git_repo: BareRepo, remote_url: str, tmp_path: Path) -> None:
        first = git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        source = GitSource(remote_url, workdir=tmp_path / "work", poll_interval=0.2)
        async with Running(source) as running:
            await _next(running.queue, revision=first)
            second = await asyncio.to_thread(git_repo.commit, {"b.yaml": rollout("b", "2.0.0")})
            started = time.monotonic()
            snap = await _next(running.queue, revision=second)
            elapsed = time.monotonic() - started
        assert set(snap.rollouts) == {"a", "b"}
        assert elapsed < 0.2 + 1.0  # one interval, plus a generous fetch time

    async def test_trigger_syncs_at_once(self, git_repo: BareRepo, git_daemon: GitDaemon,
                                         tmp_path: Path) -> None:
        first = git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        source = GitSource(git_daemon.url(), workdir=tmp_path / "work", poll_interval=60)
        async with Running(source) as running:
            await _next(running.queue, revision=first)
            second = await asyncio.to_thread(git_repo.commit, {"a.yaml": rollout("a", "1.0.1")})
            assert source.wants(GitPush("refs/heads/main", second, "acme/fleet"))
            source.trigger()
            snap = await _next(running.queue, revision=second, until=3.0)
        assert snap.rollouts["a"].spec.version == "1.0.1"
        assert snap.rollouts["a"].generation == 2

    async def test_unchanged_poll_delivers_nothing_new(self, git_repo: BareRepo,
                                                       tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        source = GitSource(git_repo.file_url, workdir=tmp_path / "work", poll_interval=0.05)
        async with Running(source) as running:
            await _next(running.queue)
            await asyncio.sleep(0.4)
        assert running.queue.empty()


class TestBrokenAndRemovedFiles:
    async def test_bad_commit_keeps_last_good_rollout_and_reports_file_line_field(
            self, git_repo: BareRepo, remote_url: str, tmp_path: Path) -> None:
        good = git_repo.commit({"app.yaml": rollout("app", "1.0.0"),
                                "other.yaml": rollout("other", "1.0.0")})
        source = GitSource(remote_url, workdir=tmp_path / "work")
        await source.sync()
        bad = git_repo.commit({"app.yaml": broken_rollout("app"),
                               "other.yaml": rollout("other", "1.1.0")}, "break app")
        snap = await source.sync()
        assert snap.revision == bad and snap.error is None and not snap.ok
        kept = snap.rollouts["app"]
        assert kept.spec.version == "1.0.0" and kept.source.revision == good
        assert snap.rollouts["other"].spec.version == "1.1.0"  # the other files apply
        [problem] = snap.problems
        assert (problem.file, problem.line, problem.field) == ("app.yaml", BROKEN_LINE,
                                                               BROKEN_FIELD)
        assert snap.invalid_files == ("app.yaml",)

    async def test_new_invalid_file_contributes_nothing(self, git_repo: BareRepo,
                                                        tmp_path: Path) -> None:
        git_repo.commit({"app.yaml": broken_rollout("app")})
        snap = await GitSource(git_repo.file_url, workdir=tmp_path / "w").sync()
        assert snap.rollouts == {} and snap.problems[0].file == "app.yaml"

    async def test_removed_file_stops_its_rollout(self, git_repo: BareRepo, remote_url: str,
                                                  tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0"), "b.yaml": rollout("b", "1.0.0")})
        source = GitSource(remote_url, workdir=tmp_path / "work")
        assert set((await source.sync()).rollouts) == {"a", "b"}
        git_repo.commit({"b.yaml": None}, "remove b")
        assert set((await source.sync()).rollouts) == {"a"}

    async def test_removed_invalid_file_is_gone_too(self, git_repo: BareRepo,
                                                    tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        source = GitSource(git_repo.file_url, workdir=tmp_path / "work")
        await source.sync()
        git_repo.commit({"a.yaml": broken_rollout("a")})
        assert "a" in (await source.sync()).rollouts
        git_repo.commit({"a.yaml": None})
        snap = await source.sync()
        assert snap.rollouts == {} and snap.problems == ()

    async def test_duplicate_name_reported_and_running_one_kept(self, git_repo: BareRepo,
                                                                tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("app", "1.0.0")})
        source = GitSource(git_repo.file_url, workdir=tmp_path / "work")
        await source.sync()
        git_repo.commit({"z.yaml": rollout("app", "2.0.0")})
        snap = await source.sync()
        assert snap.rollouts["app"].spec.version == "1.0.0"
        [problem] = snap.problems
        assert problem.file == "z.yaml" and "duplicate Rollout name 'app'" in problem.message


class TestUnreachable:
    async def test_stopped_daemon_is_reported_and_sync_recovers_on_the_same_port(
            self, git_repo: BareRepo, git_daemon: GitDaemon, tmp_path: Path) -> None:
        first = git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        registry = CollectorRegistry()
        metrics = build_metrics(registry)
        source = GitSource(git_daemon.url(), workdir=tmp_path / "work", poll_interval=30,
                           backoff=Backoff(initial=0.1, maximum=0.4), metrics=metrics)
        labels = {"source": source.name}
        async with Running(source) as running:
            await _next(running.queue, revision=first)
            await asyncio.to_thread(git_daemon.stop)
            second = await asyncio.to_thread(git_repo.commit, {"b.yaml": rollout("b", "1.0.0")})
            source.trigger()
            down = await _next(running.queue, error=True)
            assert down.revision == first and set(down.rollouts) == {"a"}  # last state kept
            assert down.error is not None and "Connection refused" in down.error
            assert not down.ok
            await asyncio.sleep(0.6)  # several back-off retries: 0.1, 0.2, 0.4 (capped)
            assert source.failures >= 3
            assert source.next_delay() == 0.4
            await asyncio.to_thread(git_daemon.start)
            up = await _next(running.queue, error=False, until=3.0)
        assert up.revision == second and set(up.rollouts) == {"a", "b"}
        assert source.failures == 0
        errors = registry.get_sample_value("fleetwave_source_sync_errors_total", labels)
        assert errors is not None and errors >= 3
        assert registry.get_sample_value("fleetwave_source_revision_info",
                                         {**labels, "revision": second}) == 1
        assert registry.get_sample_value("fleetwave_source_revision_info",
                                         {**labels, "revision": first}) is None

    async def test_unreachable_before_the_first_sync_gives_an_empty_snapshot(
            self, tmp_path: Path) -> None:
        source = GitSource(f"git://127.0.0.1:{_closed_port()}/none.git", workdir=tmp_path / "w")
        snap = await source.sync()
        assert snap.revision is None and snap.rollouts == {} and snap.error

    async def test_missing_branch_is_an_error_not_an_empty_fleet(self, git_repo: BareRepo,
                                                                 tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        snap = await GitSource(git_repo.file_url, branch="nope", workdir=tmp_path / "w").sync()
        assert snap.error is not None and "branch 'nope' not found" in snap.error


class TestBranchAndPath:
    async def test_sub_path_only(self, git_repo: BareRepo, git_http: GitHttp,
                                 tmp_path: Path) -> None:
        git_repo.commit({"fleet/prod/a.yaml": rollout("a", "1.0.0"),
                         "fleet/staging/b.yaml": rollout("b", "1.0.0"),
                         "README.yaml": "not: a resource\n"})
        snap = await GitSource(git_http.url(), path="/fleet/prod/",
                               workdir=tmp_path / "w").sync()
        assert set(snap.rollouts) == {"a"} and snap.problems == ()
        assert snap.rollouts["a"].source.path == "fleet/prod/a.yaml"

    async def test_missing_sub_path_is_reported(self, git_repo: BareRepo, tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        snap = await GitSource(git_repo.file_url, path="nowhere", workdir=tmp_path / "w").sync()
        assert snap.error is not None and "path 'nowhere' does not exist" in snap.error

    async def test_branch(self, git_repo: BareRepo, git_daemon: GitDaemon,
                          tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        staging = git_repo.commit({"a.yaml": rollout("a", "2.0.0-rc.1")}, branch="staging")
        source = GitSource(git_daemon.url(), branch="staging", workdir=tmp_path / "w")
        snap = await source.sync()
        assert snap.revision == staging and snap.rollouts["a"].spec.version == "2.0.0-rc.1"
        assert not source.wants(GitPush("refs/heads/main", "0" * 39 + "1", "acme/fleet"))

    async def test_inventories_are_merged(self, git_repo: BareRepo, tmp_path: Path) -> None:
        git_repo.commit({"inv/a.yaml": inventory("a", {"d1": {"site": "berlin", "ring": "0"}}),
                         "inv/b.yaml": inventory("b", {"d1": {"ring": "1"}, "d2": {"x": "y"}})})
        snap = await GitSource(git_repo.file_url, workdir=tmp_path / "w").sync()
        assert snap.inventories == {"d1": {"site": "berlin", "ring": "1"}, "d2": {"x": "y"}}


class TestCredentials:
    async def test_token_file_authenticates_over_http(self, git_repo: BareRepo,
                                                      git_http_token: GitHttp,
                                                      tmp_path: Path) -> None:
        rev = git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        token_file = tmp_path / "token"
        token_file.write_text("s3cr3t-token-value\n")
        source = GitSource(git_http_token.url(), workdir=tmp_path / "w",
                           credentials=GitCredentials(token_file=token_file))
        snap = await source.sync()
        assert snap.error is None and snap.revision == rev
        assert "x-access-token" in git_http_token.seen_users

    async def test_missing_credentials_say_what_to_give(self, git_repo: BareRepo,
                                                        git_http_token: GitHttp,
                                                        tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        snap = await GitSource(git_http_token.url(), workdir=tmp_path / "w").sync()
        assert snap.error is not None and "token file" in snap.error

    async def test_token_in_url_never_reaches_errors_logs_metrics_or_snapshots(
            self, git_repo: BareRepo, git_http_token: GitHttp, tmp_path: Path) -> None:
        git_repo.commit({"a.yaml": rollout("a", "1.0.0")})
        registry = CollectorRegistry()
        secret = "s3cr3t-token-value"
        wrong = "wr0ng-token-value"
        with structlog.testing.capture_logs() as logs:
            good = GitSource(git_http_token.url(f"x-access-token:{secret}"),
                             workdir=tmp_path / "good", metrics=build_metrics(registry))
            ok = await good.sync()
            bad = GitSource(git_http_token.url(f"x-access-token:{wrong}"),
                            workdir=tmp_path / "bad", metrics=build_metrics(CollectorRegistry()))
            failed = await bad.sync()
        assert ok.error is None and set(ok.rollouts) == {"a"}
        assert failed.error is not None and "refused the credentials in the URL" in failed.error
        shown = " ".join([repr(ok), repr(failed), str(logs), good.name, bad.name, good.url,
                          repr(good.snapshot)])
        from prometheus_client import generate_latest
        shown += generate_latest(registry).decode()
        assert secret not in shown and wrong not in shown
        assert "http://***@127.0.0.1" in good.name
        assert any(entry["event"] == "source.sync_failed" for entry in logs)

    def test_credentials_repr_holds_no_secret(self, tmp_path: Path) -> None:
        token_file = tmp_path / "token"
        token_file.write_text("s3cr3t-token-value")
        creds = GitCredentials(token_file=token_file, ssh_key_file=tmp_path / "id_ed25519")
        assert "s3cr3t" not in repr(creds)
        assert creds.token() == "s3cr3t-token-value"


def _closed_port() -> int:
    from tests.support.git import free_port
    return free_port()
