"""Settings of one controller process, shared by `run`, `operator` and `demo`.

Each field is a flag and an environment variable (DESIGN.md section 8); the
defaults are the ones a first `fleetwave run` on a laptop needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_GIT_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class Settings:
    broker: str = "mqtt://127.0.0.1:1883"
    """`mqtt://host:port` or `mqtts://host:port`."""
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca_file: str | None = None
    broker_client_id: str = "fleetwave-controller"
    """Stable: the broker keeps this client's persistent session across restarts."""
    shared_group: str | None = None
    """Set with several replicas: status ingest is spread with `$share/<group>/...`."""
    store: str = "sqlite:///fleetwave.db"
    source: str = "./rollouts"
    branch: str = "main"
    path: str = "/"
    poll_interval: float = 30.0
    """Seconds between source polls; webhooks and file changes sync sooner."""
    git_token_file: str | None = None
    git_ssh_key_file: str | None = None
    git_known_hosts_file: str | None = None
    listen: str = "127.0.0.1:8080"
    token_file: str | None = None
    read_token_file: str | None = None
    """Bearer tokens allowed to read /api/v1 (write tokens read too); None: reads are open."""
    max_new_devices_per_minute: int = 1000
    """Unknown device ids admitted per minute (a token bucket, bursts up to this): a fleet's
    churn plus a restart's resync; a flood of invented ids beyond it is refused."""
    topic_prefix: str = "iot/device"
    resync_interval: float = 30.0
    """Seconds between reconcile passes when nothing happens (the planner's next_wake wins)."""
    notify_url: str | None = None
    notify_secret: str | None = None
    notify_events: tuple[str, ...] = ()
    webhook_secret: str | None = None
    propose_reverts: bool = False
    """With a git source: after a rollback, push a branch that sets the version back."""
    signing_key: str | None = None
    """PKCS#8 PEM Ed25519 key every command is signed with (None: see `runtime.keys`)."""
    workdir: str = field(default_factory=lambda: str(Path(".fleetwave")))
    retention_days: float = 90.0
    health_check_allow: tuple[str, ...] = ()
    """CIDR ranges health checks may reach although refused by default (loopback...)."""
    health_check_deny: tuple[str, ...] = ()
    """CIDR ranges health checks never reach (the cluster's own); KUBERNETES_SERVICE_HOST
    is always added."""
    leader_election: bool | None = None
    """Elect one leader among replicas through the store (None: on with PostgreSQL only, as
    SQLite is one process's file)."""
    advertise_url: str | None = None
    """This replica's API address as other replicas and clients reach it; followers name the
    leader's in their 503 answers to writes."""
    lease_ttl: float = 8.0
    """Seconds a leader's lease lasts without a renew (renewed every third of it): a dead
    leader is replaced within about this, plus one follower round."""

    @property
    def elects_leader(self) -> bool:
        if self.leader_election is None:
            return self.store.startswith(("postgresql", "postgres"))
        return self.leader_election

    @property
    def source_is_git(self) -> bool:
        """A URL, or a local folder that is a git repository (has .git or is bare)."""
        if _GIT_URL.match(self.source):
            return True
        p = Path(self.source)
        return (p / ".git").exists() or ((p / "HEAD").is_file() and (p / "objects").is_dir())
