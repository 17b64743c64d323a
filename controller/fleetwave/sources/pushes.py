"""What a webhook tells us, as plain values: a branch moved, or an image was pushed.

They live here, beside the sources that act on them, so that the HTTP layer
(which parses them) depends on the sources and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GitPush:
    """A push to a git repository, as GitHub, GitLab or Gitea report it."""

    ref: str
    """Full ref name, e.g. `refs/heads/main`."""
    after: str
    """Commit id the ref points at after the push (all zeros when it was deleted)."""
    repository: str
    """`owner/name` as the provider names it."""
    provider: str = "github"
    delivery_id: str | None = None

    @property
    def branch(self) -> str | None:
        """The branch name, or None for tags and other refs."""
        prefix = "refs/heads/"
        return self.ref[len(prefix):] if self.ref.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class ImagePush:
    """One tag of one container image that a registry says was pushed."""

    repository: str
    """Repository path without the registry host, e.g. `acme/app`."""
    tag: str
    digest: str | None = None
    delivery_id: str | None = None
    """The registry's id of this notification, when it gives one: the same id twice is a
    redelivery."""
    registry: str | None = None
    """Registry host when known (`ghcr.io`, `harbor.example.com`), so patterns may name it."""

    @property
    def image(self) -> str:
        """`repository:tag`, what `imagePattern` is matched against."""
        return f"{self.repository}:{self.tag}"
