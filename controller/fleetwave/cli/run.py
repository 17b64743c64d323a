"""`fleetwave run`: the standalone controller (folder or git source, SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import click

from fleetwave.cli.logging import configure_logging
from fleetwave.runtime.settings import Settings


def flag_option(*decls: str, **attrs: Any) -> Callable[..., Any]:
    """A click option whose environment variable is FLEETWAVE_<FLAG> (DESIGN.md section 8).

    click's auto_envvar_prefix would name it FLEETWAVE_RUN_<FLAG> under a subcommand, which
    is not the contract; so each option names its variable itself.
    """
    flag = next(d for d in decls if d.startswith("--"))
    attrs.setdefault("envvar", "FLEETWAVE_" + flag[2:].upper().replace("-", "_"))
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, **attrs)


def _controller_flags() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The flag table of every controller process (data; each is also FLEETWAVE_<NAME>)."""
    return [
        flag_option(
            "--broker",
            default=Settings.broker,
            show_default=True,
            help="MQTT broker, mqtt://host:port or mqtts://host:port.",
        ),
        flag_option(
            "--broker-username", default=None, help="Broker user (FLEETWAVE_BROKER_USERNAME)."
        ),
        flag_option(
            "--broker-password", default=None, help="Broker password (FLEETWAVE_BROKER_PASSWORD)."
        ),
        flag_option("--broker-ca-file", default=None, help="CA bundle for mqtts://."),
        flag_option(
            "--client-id",
            default=Settings.broker_client_id,
            show_default=True,
            help="Stable MQTT client id: the broker keeps its session.",
        ),
        flag_option(
            "--shared-group",
            default=None,
            help="Spread status ingest over replicas with $share/<group>/…",
        ),
        flag_option(
            "--store",
            default=Settings.store,
            show_default=True,
            help="sqlite:///path.db or postgresql://user@host/db.",
        ),
        flag_option(
            "--topic-prefix",
            default=Settings.topic_prefix,
            show_default=True,
            help="Replaces iot/device in every topic.",
        ),
        flag_option(
            "--listen", default=Settings.listen, show_default=True, help="HTTP API address."
        ),
        flag_option(
            "--token-file",
            default=None,
            type=click.Path(dir_okay=False),
            help="Bearer tokens allowed to write, one a line (none: writes refused).",
        ),
        flag_option(
            "--read-token-file",
            default=None,
            type=click.Path(dir_okay=False),
            help="Bearer tokens allowed to read /api/v1, one a line (none: reads open).",
        ),
        flag_option(
            "--max-new-devices-per-minute",
            default=Settings.max_new_devices_per_minute,
            show_default=True,
            type=click.IntRange(1),
            help="Unknown device ids admitted per minute; beyond it they are refused.",
        ),
        flag_option("--notify-url", default=None, help="Webhook for rollout events."),
        flag_option("--notify-secret", default=None, help="HMAC secret for --notify-url."),
        flag_option(
            "--webhook-secret",
            default=None,
            help="HMAC secret (or token) for incoming git/registry webhooks.",
        ),
        flag_option(
            "--signing-key",
            default=None,
            type=click.Path(dir_okay=False),
            help="Ed25519 key (PKCS#8 PEM) that signs every command; replicas share one. "
            "Without it, a SQLite store gets one beside its database file.",
        ),
        flag_option(
            "--log-format",
            type=click.Choice(["auto", "json", "console"]),
            default="auto",
            show_default=True,
            help="json when not on a TTY.",
        ),
        flag_option("--log-level", default="info", show_default=True),
        *health_check_options(),
    ]


def controller_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every controller process takes; each is also FLEETWAVE_<NAME>."""
    for option in reversed(_controller_flags()):
        func = option(func)
    return func


def cidr_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
           ) -> tuple[str, ...]:
    from fleetwave.runtime.checks import parse_cidrs
    try:
        return tuple(str(net) for net in parse_cidrs(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def health_check_options() -> list[Callable[..., Any]]:
    """Where health checks may connect (run, operator and demo)."""
    return [
        flag_option("--health-check-allow", multiple=True, metavar="CIDR", callback=cidr_list,
                    help="Let health checks reach this range although refused by default "
                    "(loopback, link-local, ...); repeatable, env space/comma separated."),
        flag_option("--health-check-deny", multiple=True, metavar="CIDR", callback=cidr_list,
                    help="Never let health checks reach this range (the cluster's own); "
                    "repeatable. KUBERNETES_SERVICE_HOST is always denied."),
    ]


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        flag_option(
            "--source",
            default=Settings.source,
            show_default=True,
            help="A local folder, or a git URL (https://, ssh://, file://, a repo path).",
        ),
        flag_option("--branch", default=Settings.branch, show_default=True),
        flag_option(
            "--path",
            "path_",
            default=Settings.path,
            show_default=True,
            help="Folder inside the git repository.",
        ),
        flag_option(
            "--poll-interval",
            default=Settings.poll_interval,
            show_default=True,
            type=float,
            help="Seconds between source polls.",
        ),
        flag_option("--git-token-file", default=None, help="File holding an https token."),
        flag_option("--git-ssh-key-file", default=None, help="Private key for ssh://."),
        flag_option("--git-known-hosts-file", default=None, help="known_hosts for ssh://."),
        flag_option(
            "--propose-reverts",
            is_flag=True,
            default=False,
            help="With a git source: after a rollback, push a branch "
            "fleetwave/revert-<rollout>-<version> that sets the version back.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def replica_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Several `fleetwave run` replicas on one PostgreSQL (DESIGN.md 9.3)."""
    options = [
        flag_option("--leader-election/--no-leader-election", default=None,
                    help="Elect one leader through the store: only it plans and publishes "
                    "[default: on with PostgreSQL]."),
        flag_option("--advertise-url", default=None,
                    help="This replica's API URL as others reach it; followers answer writes "
                    "with 503 naming the leader's [default: http://<--listen>]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(kwargs: dict[str, Any]) -> Settings:
    return Settings(
        broker=kwargs["broker"],
        broker_username=kwargs["broker_username"],
        broker_password=kwargs["broker_password"],
        broker_ca_file=kwargs["broker_ca_file"],
        broker_client_id=kwargs["client_id"],
        shared_group=kwargs["shared_group"],
        store=kwargs["store"],
        source=kwargs.get("source", Settings.source),
        branch=kwargs.get("branch", Settings.branch),
        path=kwargs.get("path_", Settings.path),
        poll_interval=kwargs.get("poll_interval", Settings.poll_interval),
        git_token_file=kwargs.get("git_token_file"),
        git_ssh_key_file=kwargs.get("git_ssh_key_file"),
        git_known_hosts_file=kwargs.get("git_known_hosts_file"),
        listen=kwargs["listen"],
        token_file=kwargs["token_file"],
        read_token_file=kwargs.get("read_token_file"),
        max_new_devices_per_minute=kwargs.get("max_new_devices_per_minute",
                                              Settings.max_new_devices_per_minute),
        topic_prefix=kwargs["topic_prefix"],
        notify_url=kwargs["notify_url"],
        notify_secret=kwargs["notify_secret"],
        webhook_secret=kwargs["webhook_secret"],
        propose_reverts=kwargs.get("propose_reverts", False),
        health_check_allow=kwargs.get("health_check_allow", ()),
        health_check_deny=kwargs.get("health_check_deny", ()),
        signing_key=kwargs.get("signing_key"),
        leader_election=kwargs.get("leader_election"),
        advertise_url=kwargs.get("advertise_url"),
    )


@click.command("run")
@controller_options
@source_options
@replica_options
def run(**kwargs: Any) -> None:
    """Run the standalone controller until SIGTERM or Ctrl-C."""
    configure_logging(kwargs["log_format"], kwargs["log_level"])
    settings = settings_from(kwargs)
    from fleetwave.runtime.controller import run_controller
    from fleetwave.runtime.keys import KeyFileError
    from fleetwave.store import StoreError

    try:
        asyncio.run(run_controller(settings))
    except (StoreError, KeyFileError) as exc:
        click.echo(f"fleetwave: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"fleetwave: {exc}", err=True)
        sys.exit(1)
