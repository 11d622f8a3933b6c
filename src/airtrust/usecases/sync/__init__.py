"""``airtrust sync``: a controller that keeps every target converged.

It watches namespaces (by the configured selector and names), the CA source
(a Secret or ConfigMap in a trust namespace) and the target secrets, and
reconciles within seconds with server-side apply. A source that fails
validation is never distributed: the last good bundle stays, and the
failure shows in the logs and metrics. Several replicas may run; a
``coordination.k8s.io`` Lease elects the one that writes.

Unlike trust-manager, the bundle it distributes is validated exactly as
``airtrust bundle build`` validates (no keys, CA certificates only, none
expired) and the objects are the same ones ``airtrust apply`` writes.
"""

from airtrust.usecases.sync.health import Metrics, serve_metrics
from airtrust.usecases.sync.lease import LeaderElector
from airtrust.usecases.sync.loop import SyncController
from airtrust.usecases.sync.start import SyncOptions, run_sync

__all__ = [
    "LeaderElector",
    "Metrics",
    "SyncController",
    "SyncOptions",
    "run_sync",
    "serve_metrics",
]
