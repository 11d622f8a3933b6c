"""Starting ``airtrust sync``: from flags or airtrust.yaml to a running controller.

The scope (roles, version, namespaces, selector) comes from the config's
context when there is one, else from the flags; OpenShift is decided once, by
:func:`airtrust.plan.topology.is_openshift`, as apply decides it. The process
then serves its metrics, elects a leader when asked, and stops cleanly on
SIGTERM (a Deployment's rollout) or Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airtrust.kube.api import KubeAPI
from airtrust.plan.source import Source
from airtrust.plan.topology import Role, SyncScope, is_openshift
from airtrust.profiles import load_profile
from airtrust.usecases.choices import OpenShiftChoice, RoleChoice
from airtrust.usecases.sync.health import serve_metrics
from airtrust.usecases.sync.lease import LeaderElector
from airtrust.usecases.sync.loop import SyncController

__all__ = ["SyncOptions", "run_sync"]


@dataclass(frozen=True)
class SyncOptions:
    """What ``airtrust sync`` was asked to do (its flags, checked by the CLI)."""

    source: str
    kubeconfig: Path | None = None
    context: str = ""
    in_cluster: bool = False
    namespaces: Sequence[str] = ()
    selector: str | None = None
    metrics_addr: str = "127.0.0.1:9090"
    lease_namespace: str | None = None
    lease_duration: int = 15
    identity: str | None = None
    resync: float = 30.0
    once: bool = False
    config: Path | None = None
    roles: Sequence[RoleChoice] = ()
    platform_version: str | None = None
    openshift: OpenShiftChoice = OpenShiftChoice.AUTO


def _controller(options: SyncOptions) -> SyncController:
    profile = load_profile()
    source = Source.parse(options.source, profile.ca_secret.key)
    kubeconfig, context = options.kubeconfig, options.context
    if options.config is not None:
        from airtrust.config import load_config  # the config's models only when one is given

        loaded = load_config(options.config)
        context = context or next(iter(loaded.contexts()), "")
        kubeconfig = kubeconfig or loaded.kubeconfig
        scope = SyncScope.from_config(loaded, profile, context)
    else:
        roles = tuple(Role(r) for r in options.roles) or (Role.CLUSTER,)
        version = options.platform_version or profile.default_version
        # SyncScope holds airtrust.yaml's plain value (it becomes container args).
        scope = SyncScope(roles, version, str(options.openshift))
    scope = scope.with_options(namespaces=tuple(options.namespaces), selector=options.selector)
    api = (
        KubeAPI.in_cluster()
        if options.in_cluster
        else KubeAPI.connect(context, kubeconfig=kubeconfig)
    )
    openshift = is_openshift(scope.openshift, profile, api.api_groups)
    return SyncController(
        api, profile, source, scope.targets(profile, openshift=openshift), scope.selector
    )


def run_sync(options: SyncOptions) -> int:
    """Run until stopped; with ``once``, one pass. The objects written (``once``), else 0."""
    controller = _controller(options)
    if options.once:
        try:
            return controller.reconcile()
        finally:
            controller.api.close()
    server = serve_metrics(controller.metrics, options.metrics_addr)
    elector = None
    if options.lease_namespace:
        name = options.identity or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(
            controller.api, options.lease_namespace, name, options.lease_duration
        )

    def stop(*_: object) -> None:
        controller.stop.set()
        controller.dirty.set()  # wake the loop now, not at the next resync

    signal.signal(signal.SIGTERM, stop)
    try:
        controller.run(elector, resync=options.resync)
    except KeyboardInterrupt:
        stop()
    finally:
        server.shutdown()
        controller.api.close()
    return 0
