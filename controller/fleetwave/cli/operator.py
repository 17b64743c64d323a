"""`fleetwave operator`: the Kubernetes operator (Rollouts as custom resources)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import click

from fleetwave.cli.logging import configure_logging
from fleetwave.cli.run import controller_options, flag_option, settings_from


def watched_namespace(namespace: str | None, all_namespaces: bool,
                      pod: Callable[[], str]) -> str | None:
    """One namespace by default (the pod's), so that a Role is enough; None (every
    namespace, a ClusterRole) only when asked."""
    if all_namespaces and namespace:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    if all_namespaces:
        return None
    return namespace or pod()


@click.command("operator")
@controller_options
@flag_option("--namespace", default=None,
              help="Watch Rollouts in this namespace only (default: the pod's own "
                   "namespace, or 'default' outside a pod).")
@flag_option("--all-namespaces", is_flag=True, default=False,
              help="Watch every namespace (needs a ClusterRole; off: one namespace, a Role).")
@flag_option("--lease-name", default="fleetwave-operator", show_default=True,
              help="The coordination.k8s.io Lease that elects the replica that plans.")
@flag_option("--lease-namespace", default=None,
              help="Namespace of the Lease (default: --namespace, else the pod's namespace, "
                   "else 'default').")
@flag_option("--lease-duration", default=15.0, show_default=True, type=float,
              help="Seconds without renewal after which a standby takes over.")
@flag_option("--identity", default=None, envvar=["FLEETWAVE_IDENTITY", "POD_NAME"],
              help="This replica's name in the Lease (default: hostname-pid).")
def operator(**kwargs: Any) -> None:
    """Run as a Kubernetes operator until SIGTERM or Ctrl-C; one replica plans at a time."""
    configure_logging(kwargs["log_format"], kwargs["log_level"])
    settings = settings_from(kwargs)
    from fleetwave.operator.process import run_operator
    from fleetwave.operator.runtime import OperatorOptions, default_identity, pod_namespace
    namespace = watched_namespace(kwargs["namespace"], kwargs["all_namespaces"], pod_namespace)
    options = OperatorOptions(
        identity=kwargs["identity"] or default_identity(),
        namespace=namespace,
        lease_name=kwargs["lease_name"],
        lease_namespace=kwargs["lease_namespace"] or namespace or pod_namespace(),
        lease_duration=kwargs["lease_duration"],
    )
    from fleetwave.runtime.keys import KeyFileError
    from fleetwave.store import StoreError
    try:
        asyncio.run(run_operator(settings, options))
    except (StoreError, KeyFileError, OSError) as exc:
        click.echo(f"fleetwave: {exc}", err=True)
        sys.exit(1)
