"""Starting ``airtrust inject``: from the command's flags to a cluster connection and
the bundle distributor the webhook serves beside.

The CLI only parses flags and prints; which account connects (the pod's, or a
kubeconfig context) and how the distributor is wired (the merged bundle of the
base roots and the local CA, written into every namespace in scope) is decided
here, once, for ``inject serve`` and ``inject unregister`` alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from airtrust.files import read_input
from airtrust.kube.api import KubeAPI
from airtrust.pki.bundle import Bundle
from airtrust.plan.inject import InjectSettings
from airtrust.usecases.inject.bundles import BundleDistributor

__all__ = ["bundle_distributor", "connect"]


def connect(*, in_cluster: bool, context: str = "", kubeconfig: Path | None = None) -> KubeAPI:
    """The pod's ServiceAccount in the cluster, else the kubeconfig's context."""
    if in_cluster:
        return KubeAPI.in_cluster()
    return KubeAPI.connect(context, kubeconfig=kubeconfig)


def bundle_distributor(
    *,
    selector: str,
    settings: InjectSettings,
    base_bundle: Path,
    local: Callable[[], Bundle],
    in_cluster: bool,
    context: str = "",
    kubeconfig: Path | None = None,
) -> BundleDistributor:
    """The distributor that keeps the merged bundle (``base_bundle``'s public roots plus
    the local CA) in every namespace ``selector`` matches; ``local`` is read again on
    every pass (the mounted CA secret, which a rotation rewrites)."""
    base_pem = read_input(str(base_bundle))
    api = connect(in_cluster=in_cluster, context=context, kubeconfig=kubeconfig)
    return BundleDistributor(api, selector, settings, base_pem, local)
