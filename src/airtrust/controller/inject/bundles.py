"""The merged bundle each in-scope namespace needs for its injected pods.

A pod can only mount a ConfigMap of its own namespace, so the bundle the
webhook points pods at is written into every namespace the selector matches:
``ca-bundle.pem`` (the base bundle's public roots plus the local CA) and, for
Java pods that opt in, ``truststore.p12`` (the same roots, password-less,
deterministic so an unchanged bundle is an unchanged object).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from airtrust.errors import AirtrustError
from airtrust.kube.api import KubeAPI
from airtrust.layers.truststore import joined_bundle
from airtrust.pki.bundle import Bundle, read_certificates
from airtrust.pki.truststore import to_pkcs12
from airtrust.plan.inject import BUNDLE_KEY, TRUSTSTORE_KEY, InjectSettings
from airtrust.plan.manifests import bundle_configmap
from airtrust.plan.model import JsonObj

__all__ = ["BundleDistributor", "merged_bundle"]

log = logging.getLogger(__name__)


def merged_bundle(base_pem: bytes, local: Bundle) -> tuple[bytes, bytes]:
    """(PEM, password-less PKCS#12) of the base's roots plus the local CAs."""
    pem = joined_bundle(base_pem, [a.certificate for a in local.anchors])
    anchors = tuple(read_certificates(pem, "merged bundle"))
    return pem, to_pkcs12(Bundle(anchors), "")


@dataclass
class BundleDistributor:
    api: KubeAPI
    selector: str
    settings: InjectSettings
    pem: bytes
    truststore: bytes
    #: namespaces written at least once; readiness means the first pass went through
    passes: int = 0
    failed: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def manifest(self, namespace: str) -> JsonObj:
        return bundle_configmap(
            namespace,
            self.settings.configmap,
            {BUNDLE_KEY: self.pem.decode()},
            {TRUSTSTORE_KEY: self.truststore},
        )

    def reconcile(self) -> list[str]:
        """Write the bundle into every namespace in scope; the namespaces written."""
        namespaces = self.api.namespaces(self.selector)
        for namespace in namespaces:
            self.api.apply(self.manifest(namespace))
        with self.lock:
            self.passes += 1
            self.failed = ""
        return namespaces

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.reconcile()
            except AirtrustError as exc:
                with self.lock:
                    self.failed = exc.one_line()
                log.warning("inject: bundle pass failed: %s", exc.one_line())
            stop.wait(interval)
