"""Two-phase CA rotation without downtime, with its state kept in the cluster.

Phase 1 (``rotate start``): every bundle carries old + new CA (secrets,
workload namespaces, sidecar images), and only then are the TLS
certificates re-issued under the new CA. Clients trust both throughout, so
there is no moment where a served certificate is not trusted.

Phase 2 (``rotate finish``): only once every endpoint and TLS secret chains
to the new CA alone, the old CA is removed everywhere and the images are
re-patched.

The record (:mod:`airtrust.plan.rotation`) is read by every session
(:func:`airtrust.usecases.session.open_session` follows it); this package
writes it and carries out the two phases.
"""

from airtrust.usecases.rotation.rotate import finish, save_state, start

__all__ = ["finish", "save_state", "start"]
