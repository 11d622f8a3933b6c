"""``airtrust inject unregister``: take the webhook's configuration away before its
pods go.

``helm uninstall`` deletes a release's objects in Helm's ``UninstallOrder``
(pkg/releaseutil/kind_sorter.go, helm 3.17), which lists no webhook
configuration kinds: unknown kinds sort last, after the Service and the
Deployment. Left to that order, under ``failurePolicy: Fail`` the apiserver
keeps calling a webhook whose pods are gone and refuses every pod created in
scope until the configuration goes. The chart's ``pre-delete`` hook runs this
first: delete the MutatingWebhookConfiguration, wait until the apiserver no
longer serves it, then a short settle for every apiserver's admission informer
to drop it; only then does Helm delete anything else, the webhook's pods last.

Gone already is success: a retried hook, or a release whose configuration was
deleted by hand, uninstalls cleanly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from airtrust.errors import ApiFailure
from airtrust.kube.api import KubeAPI
from airtrust.plan.inject import WEBHOOK_CONFIGURATIONS

__all__ = ["unregister"]

log = logging.getLogger(__name__)


def unregister(
    api: KubeAPI,
    name: str,
    *,
    timeout: float = 60.0,
    settle: float = 2.0,
    every: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Delete the MutatingWebhookConfiguration ``name`` and return once it is gone;
    True if it was there. Raises :class:`ApiFailure` if it is still served after
    ``timeout`` seconds (a finalizer holds it)."""
    api_version, plural = WEBHOOK_CONFIGURATIONS
    existed = api.get(api_version, plural, None, name) is not None
    if existed:
        api.delete(api_version, plural, None, name)
    deadline = clock() + timeout
    while api.get(api_version, plural, None, name) is not None:
        if clock() >= deadline:
            raise ApiFailure(
                f"mutatingwebhookconfiguration {name} is still there {timeout:g}s after its "
                "deletion",
                hint=f"kubectl get mutatingwebhookconfiguration {name} -o yaml: a finalizer "
                "may hold it",
            )
        sleep(every)
    if existed:
        sleep(settle)
        log.info("inject: mutatingwebhookconfiguration %s deleted", name)
    else:
        log.info("inject: mutatingwebhookconfiguration %s was not there", name)
    return existed
