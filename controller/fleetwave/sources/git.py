"""A git repository as the source of Rollouts (the GitOps home), and the committer for policies.

pygit2 (libgit2) fetches over https, ssh, git:// and file:// (or a plain path)
into a private bare repository under `workdir`; files are read straight from
the commit's tree, so there is no checkout to keep clean. libgit2 calls block,
so each runs in a worker thread (`asyncio.to_thread`), never on the event loop.

Secrets: the URL may carry a token and credentials come from files; every
message leaving this module (errors, logs, snapshot, metric labels) goes through
`Redactor`, and the source's display name is the URL without userinfo.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import structlog
from pygit2.enums import CredentialType, FetchPrune, FileMode

from fleetwave.metrics import Metrics
from fleetwave.resources.loading import (
    MAX_FILE_BYTES,
    YAML_SUFFIXES,
    LoadResult,
    Problem,
    load_text,
    too_big,
)
from fleetwave.resources.model import SourceRef
from fleetwave.sources.base import Backoff, Generations, PollingSource, SourceError
from fleetwave.sources.credentials import GitCredentials, Redactor, redact_url
from fleetwave.sources.policies import GeneratedRollout
from fleetwave.sources.pushes import GitPush

__all__ = ["CommitResult", "GitCommitter", "GitCredentials", "GitSource", "redact_url"]

log = structlog.get_logger("fleetwave.sources.git")

"""Larger blobs are reported, not parsed: a Rollout is a few KiB; this bounds memory."""

CONNECT_TIMEOUT_MS = 10_000
IO_TIMEOUT_MS = 60_000
"""libgit2 waits forever on a silent server by default; a sync must fail and back off instead."""

_HOMEDIR_LOCK = threading.Lock()
"""libgit2 reads known_hosts from one process-wide home directory: swap it under this lock."""

_configured: list[bool] = []
_configure_lock = threading.Lock()


def _configure_libgit2() -> None:
    with _configure_lock:
        if not _configured:
            pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
            pygit2.settings.server_timeout = IO_TIMEOUT_MS
            _configured.append(True)


def _normalise_url(url: str) -> str:
    """Plain paths become absolute (libgit2 resolves them against its own cwd otherwise)."""
    if "://" in url or (":" in url and "@" in url.split(":", 1)[0]):
        return url
    return str(Path(url).expanduser().resolve())


def _subpath(path: str) -> str:
    """`/`, ``, `./` -> `` ; `/rollouts/` -> `rollouts`."""
    clean = posixpath.normpath("/" + path.strip()).strip("/")
    return "" if clean in (".", "") else clean


class _Repo:
    """The private bare repository one source or committer fetches into."""

    def __init__(self, url: str, workdir: Path, credentials: GitCredentials | None) -> None:
        _configure_libgit2()
        self.url = _normalise_url(url)
        self.workdir = workdir
        self.credentials = credentials
        self.redact = Redactor(self.url, credentials)
        self.shown_url = self.redact.shown_url

    def open(self) -> pygit2.Repository:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if (self.workdir / "HEAD").exists():
            repo = pygit2.Repository(str(self.workdir))
        else:
            repo = pygit2.init_repository(str(self.workdir), bare=True)
        if "origin" in [r.name for r in repo.remotes]:
            if repo.remotes["origin"].url != self.url:
                repo.remotes.set_url("origin", self.url)
        else:
            repo.remotes.create("origin", self.url)
        return repo

    def callbacks(self) -> Callbacks:
        return Callbacks(self.credentials, self.shown_url)

    def fetch(self, repo: pygit2.Repository, branch: str) -> pygit2.Commit:
        """Fetch `branch` and return its commit; errors become `SourceError`, redacted."""
        remote_ref = f"refs/remotes/origin/{branch}"
        try:
            with known_hosts_home(self.credentials, self.workdir):
                repo.remotes["origin"].fetch([f"+refs/heads/{branch}:{remote_ref}"],
                                             callbacks=self.callbacks(), prune=FetchPrune.PRUNE)
        except SourceError as exc:
            raise SourceError(self.redact(str(exc))) from None
        except (pygit2.GitError, OSError, ValueError, KeyError) as exc:
            raise SourceError(f"cannot fetch {self.shown_url}: "
                              f"{self.redact(str(exc)) or type(exc).__name__}") from None
        ref = repo.references.get(remote_ref)
        if ref is None:
            raise SourceError(f"branch {branch!r} not found in {self.shown_url}; check --branch")
        try:
            return repo[ref.target].peel(pygit2.Commit)
        except (pygit2.GitError, KeyError, ValueError):
            raise SourceError(f"branch {branch!r} of {self.shown_url} does not point at a "
                              "commit") from None


class GitSource(PollingSource):
    """Rollouts, policies and inventories from `path` on `branch` of a git repository.

    `path` is relative to the repository root; `/` means the whole repository.
    Each Rollout's `source` is `SourceRef("git", <commit id>, <repo-relative file>)`.
    """

    kind = "git"

    def __init__(
        self,
        url: str,
        *,
        branch: str = "main",
        path: str = "/",
        poll_interval: float = 30.0,
        workdir: str | os.PathLike[str],
        credentials: GitCredentials | None = None,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        generations: Generations | None = None,
    ) -> None:
        self._repo = _Repo(url, Path(workdir), credentials)
        super().__init__(self._repo.shown_url, poll_interval=poll_interval, backoff=backoff,
                         metrics=metrics, generations=generations)
        self.branch = branch
        self.path = _subpath(path)
        self._cache: tuple[str, dict[str, LoadResult]] | None = None

    @property
    def url(self) -> str:
        """The URL without credentials."""
        return self._repo.shown_url

    def wants(self, push: GitPush) -> bool:
        """Whether a push webhook concerns this source's branch (then `trigger()` it)."""
        return push.branch == self.branch

    async def _read(self) -> tuple[str, Mapping[str, LoadResult]]:
        return await asyncio.to_thread(self._read_blocking)

    def _read_blocking(self) -> tuple[str, dict[str, LoadResult]]:
        repo = self._repo.open()
        commit = self._repo.fetch(repo, self.branch)
        revision = str(commit.id)
        if self._cache is not None and self._cache[0] == revision:
            return self._cache
        tree: pygit2.Tree = commit.tree
        if self.path:
            try:
                sub = tree[self.path]
            except KeyError:
                raise SourceError(f"path {self.path!r} does not exist on branch "
                                  f"{self.branch!r} at {revision[:12]}; check --path") from None
            if not isinstance(sub, pygit2.Tree):
                raise SourceError(f"path {self.path!r} on branch {self.branch!r} is a file, "
                                  "not a folder; check --path")
            tree = sub
        ref = SourceRef(kind="git", revision=revision)
        results: dict[str, LoadResult] = {}
        for file, blob in _yaml_blobs(tree, self.path):
            if blob.size > MAX_FILE_BYTES:
                results[file] = LoadResult(problems=[too_big(file, blob.size)])
                continue
            try:
                text = blob.data.decode("utf-8")
            except UnicodeDecodeError:
                results[file] = LoadResult(problems=[Problem(
                    file, None, None, "", "file is not UTF-8 text; save it as UTF-8")])
                continue
            results[file] = load_text(text, file, ref)
        self._cache = (revision, results)
        return self._cache


def _yaml_blobs(tree: pygit2.Tree, prefix: str) -> list[tuple[str, pygit2.Blob]]:
    """YAML blobs under `tree`, with repository-relative paths; dot-files and folders skipped."""
    out: list[tuple[str, pygit2.Blob]] = []
    for entry in tree:
        name = entry.name or ""
        if name.startswith("."):
            continue
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(entry, pygit2.Tree):
            out.extend(_yaml_blobs(entry, path))
        elif isinstance(entry, pygit2.Blob) and name.endswith(YAML_SUFFIXES):
            out.append((path, entry))
    return sorted(out, key=lambda item: item[0])


# -- committing policy-generated rollouts ---------------------------------------


@dataclass(frozen=True, slots=True)
class CommitResult:
    revision: str
    """The commit that holds the file (a new one, or the current head when unchanged)."""
    path: str
    """Repository-relative path of the Rollout file."""
    created: bool
    """False when the file already had this content: nothing was committed."""


class GitCommitter:
    """Commits a policy-generated Rollout into the repository and pushes it.

    Git stays the source of truth: the Rollout then comes back through the
    `GitSource` like any hand-written one (so `commitTo.path` must lie inside
    the source's `path`). A push that loses a race with another commit is retried
    on top of the new head.
    """

    def __init__(
        self,
        url: str,
        *,
        branch: str = "main",
        workdir: str | os.PathLike[str],
        credentials: GitCredentials | None = None,
        author_name: str = "fleetwave",
        author_email: str = "fleetwave@localhost",
        attempts: int = 3,
    ) -> None:
        self._repo = _Repo(url, Path(workdir), credentials)
        self.branch = branch
        self.author_name = author_name
        self.author_email = author_email
        self.attempts = attempts
        self._lock = threading.Lock()

    async def commit(self, generated: GeneratedRollout) -> CommitResult:
        """Write `<commitTo.path>/<name>.yaml`, commit and push; raise `SourceError` on failure."""
        commit_to = generated.policy.commit_to
        folder = _subpath(commit_to.path if commit_to is not None else "rollouts/generated")
        branch = (commit_to.branch if commit_to is not None and commit_to.branch
                  else self.branch)
        file = f"{folder}/{generated.name}.yaml" if folder else f"{generated.name}.yaml"
        return await asyncio.to_thread(self._commit_blocking, file, branch,
                                       generated.yaml.encode(), generated.commit_message)

    async def propose(self, file: str, content: bytes, message: str, *, branch: str,
                      base: str) -> CommitResult:
        """Commit `file` on `branch`, started from `base`'s head and force-pushed: a change
        offered for review (a revert after a rollback), never pushed to `base` itself."""
        return await asyncio.to_thread(self._commit_blocking, file, branch, content, message,
                                       base)

    async def read(self, file: str, branch: str | None = None) -> bytes | None:
        """The content of `file` at the head of `branch` (None when it does not exist)."""
        def blocking() -> bytes | None:
            with self._lock:
                head = self._repo.fetch(self._repo.open(), branch or self.branch)
                try:
                    blob = head.tree[file]
                except KeyError:
                    return None
                return bytes(blob.data) if isinstance(blob, pygit2.Blob) else None
        return await asyncio.to_thread(blocking)

    def _commit_blocking(self, file: str, branch: str, content: bytes,
                         message: str, base: str | None = None) -> CommitResult:
        with self._lock:
            repo = self._repo.open()
            for _ in range(self.attempts):
                head = self._repo.fetch(repo, base or branch)
                try:
                    existing = head.tree[file]
                except KeyError:
                    existing = None
                if isinstance(existing, pygit2.Blob) and existing.data == content:
                    return CommitResult(str(head.id), file, created=False)
                blob = repo.create_blob(content)
                tree = _tree_with(repo, head.tree, file.split("/"), blob)
                author = pygit2.Signature(self.author_name, self.author_email)
                oid = repo.create_commit(None, author, author, message + "\n", tree, [head.id])
                local = f"refs/heads/{branch}"
                repo.references.create(local, oid, force=True)
                callbacks = self._repo.callbacks()
                try:
                    refspec = f"+{local}:{local}" if base else f"{local}:{local}"
                    with known_hosts_home(self._repo.credentials, self._repo.workdir):
                        repo.remotes["origin"].push([refspec], callbacks=callbacks)
                except SourceError as exc:
                    raise SourceError(self._repo.redact(str(exc))) from None
                except (pygit2.GitError, OSError, ValueError) as exc:
                    text = self._repo.redact(str(exc))
                    if "fast-forward" in text or "rejected" in text:
                        continue
                    raise SourceError(f"cannot push to {self._repo.shown_url}: {text}") from None
                if callbacks.rejected:
                    log.info("git.push_rejected", url=self._repo.shown_url,
                             reason=self._repo.redact(callbacks.rejected[0][1]))
                    continue
                log.info("git.committed", url=self._repo.shown_url, branch=branch, file=file,
                         revision=str(oid))
                return CommitResult(str(oid), file, created=True)
        raise SourceError(f"cannot push to {self._repo.shown_url}: branch {branch!r} kept "
                          f"moving for {self.attempts} attempts; try again")


def _tree_with(repo: pygit2.Repository, tree: pygit2.Tree | None, parts: list[str],
               blob: pygit2.Oid) -> pygit2.Oid:
    """A copy of `tree` with `blob` at `parts` (folders created as needed)."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    head, rest = parts[0], parts[1:]
    if not rest:
        builder.insert(head, blob, FileMode.BLOB)
        return builder.write()
    sub: pygit2.Tree | None = None
    if tree is not None:
        try:
            found = tree[head]
        except KeyError:
            found = None
        if isinstance(found, pygit2.Tree):
            sub = found
    builder.insert(head, _tree_with(repo, sub, rest, blob), FileMode.TREE)
    return builder.write()


class Callbacks(pygit2.RemoteCallbacks):
    """Answers libgit2's credential and certificate questions from `GitCredentials`.

    libgit2 asks again after a refused credential; answering the same thing would
    loop, so the second request for one kind fails with a message users can act on.
    """

    def __init__(self, credentials: GitCredentials | None, shown_url: str) -> None:
        super().__init__()
        self._credentials = credentials or GitCredentials()
        self._shown_url = shown_url
        self._asked: set[str] = set()
        self.rejected: list[tuple[str, str]] = []
        """(ref, message) for each reference the remote refused during a push."""

    def credentials(self, url: str, username_from_url: str | None,
                    allowed_types: CredentialType) -> Any:
        creds = self._credentials
        if allowed_types & CredentialType.USERPASS_PLAINTEXT:
            token = creds.token()
            if token:
                return self._once("token", pygit2.UserPass(creds.username, token),
                                  "the server refused the token from the token file")
            if username_from_url is not None:
                # libgit2 already tried the user:password in the URL before asking us.
                raise SourceError(f"authentication to {self._shown_url} failed: the server "
                                  "refused the credentials in the URL; check the token")
        if allowed_types & CredentialType.SSH_KEY and creds.ssh_key_file:
            key = str(creds.ssh_key_file)
            pub = creds.ssh_public_key_file or (key + ".pub" if Path(key + ".pub").exists()
                                                 else None)
            passphrase = creds.passphrase()
            return self._once("ssh", pygit2.Keypair(username_from_url or "git",
                                                    str(pub) if pub else None, key, passphrase),
                              "the server refused the SSH key")
        raise SourceError(f"{self._shown_url} asks for credentials: give a token file "
                          "(HTTPS) or an SSH key file (ssh://)")

    def _once(self, kind: str, credential: Any, refused: str) -> Any:
        if kind in self._asked:
            raise SourceError(f"authentication to {self._shown_url} failed: {refused}; "
                              "check that it is current and allowed to read the repository")
        self._asked.add(kind)
        return credential

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        """Accept only what TLS verified, or (SSH) a host key listed in known_hosts.

        pygit2 would otherwise let any SSH host key through; libgit2 already checked
        the key against known_hosts (see `known_hosts_home`) and tells us in `valid`.
        """
        if not valid:
            raise SourceError(f"the identity of {host.decode(errors='replace')} could not be "
                              "verified: for ssh add its key to the known_hosts file, for "
                              "https make sure its certificate is trusted")
        return True

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected.append((refname, message))


@contextmanager
def known_hosts_home(credentials: GitCredentials | None, workdir: Path) -> Iterator[None]:
    """Point libgit2's home at a private folder holding our known_hosts, for one operation.

    libgit2 (libssh2 backend) reads `<home>/.ssh/known_hosts` and only tells the
    certificate callback whether the key matched. The home directory is process-wide,
    so it is swapped under a lock and restored afterwards.
    """
    if credentials is None or not credentials.known_hosts_file:
        yield
        return
    home = workdir / ".fleetwave-ssh-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(credentials.known_hosts_file, home / ".ssh" / "known_hosts")
    except OSError as exc:
        raise SourceError(f"cannot read known_hosts file {credentials.known_hosts_file}: "
                          f"{exc.strerror}") from None
    with _HOMEDIR_LOCK:
        before = pygit2.settings.homedir
        pygit2.settings.homedir = str(home)
        try:
            yield
        finally:
            pygit2.settings.homedir = before or str(Path.home())
