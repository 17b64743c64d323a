"""commitTo: a policy-generated Rollout is committed and pushed, then comes back from git."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetwave.resources.model import Rollout, RolloutPolicy
from fleetwave.sources.base import SourceError
from fleetwave.sources.git import GitCommitter, GitSource
from fleetwave.sources.policies import PolicyRollouts, evaluate_push
from fleetwave.sources.pushes import ImagePush
from fleetwave.sources.registry import RegistryPushHandler
from tests.sources.documents import policy, rollout
from tests.support.git import BareRepo, GitDaemon, GitHttp

DIGEST = "sha256:" + "e" * 64


def pushed(repository: str, tag: str, **kw: str) -> ImagePush:
    """A push as a registry that sends the digest reports it (devices pull by digest)."""
    return ImagePush(repository, tag, digest=DIGEST, **kw)


@pytest.fixture(params=["daemon", "http"])
def push_url(request: pytest.FixtureRequest) -> str:
    if request.param == "daemon":
        daemon: GitDaemon = request.getfixturevalue("git_daemon")
        return daemon.url()
    http: GitHttp = request.getfixturevalue("git_http")
    return http.url()


async def test_generated_rollout_is_committed_and_then_comes_from_git(
        git_repo: BareRepo, push_url: str, tmp_path: Path) -> None:
    git_repo.commit({"policies/app.yaml": policy("app-auto", "acme/app:*",
                                                 commit_to="rollouts/generated"),
                     "rollouts/app.yaml": rollout("app-2-0-0", "2.0.0", "app")})
    source = GitSource(push_url, workdir=tmp_path / "source")
    snap = await source.sync()
    app_policy = snap.policies["app-auto"]
    outcome = evaluate_push(snap.policies, pushed("acme/app", "2.0.1", delivery_id="d1"),
                            {"app": {"2.0.0"}}, snap.rollouts, set())
    [generated] = outcome.created

    committer = GitCommitter(push_url, workdir=tmp_path / "committer")
    result = await committer.commit(generated)

    assert result.created and result.path == "rollouts/generated/app-auto-2-0-1.yaml"
    assert git_repo.head() == result.revision
    assert git_repo.show(result.revision, "%s") == \
        "fleetwave: roll out acme/app:2.0.1 via policy app-auto"
    assert git_repo.show(result.revision, "%an <%ae>") == "fleetwave <fleetwave@localhost>"
    assert "version: 2.0.1" in git_repo.read(result.path)

    after = await source.sync()
    ro = after.rollouts["app-auto-2-0-1"]
    assert (ro.source.kind, ro.source.revision, ro.source.path) == \
        ("git", result.revision, result.path)
    assert ro.spec.version == "2.0.1" and app_policy.commit_to is not None


async def test_same_content_twice_commits_once_and_races_are_retried(
        git_repo: BareRepo, git_daemon: GitDaemon, tmp_path: Path) -> None:
    git_repo.commit({"README.md": "fleet\n"})
    app_policy = RolloutPolicy("app-auto", "acme/app:*",
                               template={"selector": {"matchLabels": {"a": "b"}}})
    [generated] = evaluate_push([app_policy], pushed("acme/app", "1.0.0"), {}, {},
                                set()).created
    committer = GitCommitter(git_daemon.url(), workdir=tmp_path / "c",
                             author_name="Release Bot", author_email="bot@example.com")
    first = await committer.commit(generated)
    # Someone else pushes in between: the committer's local branch is now behind.
    other = await asyncio.to_thread(git_repo.commit, {"other.yaml": rollout("o", "1.0.0")})
    second = await committer.commit(generated)
    assert first.created and not second.created
    assert second.revision == other
    assert git_repo.show(first.revision, "%an <%ae>") == "Release Bot <bot@example.com>"
    assert first.path == "rollouts/generated/app-auto-1-0-0.yaml"


async def test_push_to_an_unreachable_remote_is_a_source_error(
        git_repo: BareRepo, git_daemon: GitDaemon, tmp_path: Path) -> None:
    git_repo.commit({"README.md": "fleet\n"})
    app_policy = RolloutPolicy("app-auto", "acme/app:*",
                               template={"selector": {"matchLabels": {"a": "b"}}})
    [generated] = evaluate_push([app_policy], pushed("acme/app", "1.0.0"), {}, {},
                                set()).created
    git_daemon.stop()
    with pytest.raises(SourceError, match="cannot fetch"):
        await GitCommitter(git_daemon.url(), workdir=tmp_path / "c").commit(generated)


class TestRegistryPushHandler:
    """The engine's registry handler: commit with commitTo, else keep in the registry."""

    async def test_commit_to_goes_to_git_and_triggers_the_source(
            self, git_repo: BareRepo, git_daemon: GitDaemon, tmp_path: Path) -> None:
        git_repo.commit({"policies/app.yaml": policy("app-auto", "acme/app:*",
                                                     commit_to="rollouts/generated")})
        source = GitSource(git_daemon.url(), workdir=tmp_path / "s", poll_interval=60)
        snap = await source.sync()
        kept: list[Rollout] = []
        handler = RegistryPushHandler(
            policies=lambda: snap.policies, versions=lambda: {"app": {"1.0.0"}},
            rollouts=lambda: snap.rollouts, registry=PolicyRollouts(), on_rollout=kept.append,
            committer=GitCommitter(git_daemon.url(), workdir=tmp_path / "c"), source=source)
        push = pushed("acme/app", "2.0.1", delivery_id="d1")
        [item] = await handler([push])
        assert item["created"] and item["path"] == "rollouts/generated/app-auto-2-0-1.yaml"
        assert kept == []
        assert (await source.sync()).rollouts["app-auto-2-0-1"].source.kind == "git"
        [again] = await handler([push])
        assert again["created"] is False and again["reason"] == "DuplicateDelivery"

    async def test_without_commit_to_the_registry_keeps_it(self) -> None:
        app = RolloutPolicy("app-auto", "acme/app:*",
                            template={"selector": {"matchLabels": {"a": "b"}}})
        kept: list[Rollout] = []
        registry = PolicyRollouts()
        handler = RegistryPushHandler(policies=lambda: {"app-auto": app}, versions=dict,
                                      rollouts=dict, registry=registry, on_rollout=kept.append)
        [item] = await handler([pushed("acme/app", "1.0.0")])
        assert item["created"] and [r.name for r in kept] == ["app-auto-1-0-0"]
        assert kept[0].source.kind == "policy" and "app-auto-1-0-0" in registry
        [older] = await handler([pushed("acme/app", "0.9.0")])
        assert older["reason"] == "NotNewer"
