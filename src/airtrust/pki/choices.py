"""The closed sets of pki that the command line offers as choices.

Kept apart from the modules that use them, and free of cryptography, so the
CLI can declare them as typed options (typer lists and completes the values,
click refuses the rest) while ``airtrust --help`` still starts without
importing cryptography.
"""

from __future__ import annotations

import enum

__all__ = ["BundleFormat", "KeyType", "Profile"]


class KeyType(enum.StrEnum):
    """Key algorithms a CA or server certificate can use.

    EC P-256 is the default: every TLS client airtrust targets (OpenSSL,
    GnuTLS, Go, Java, Python, curl) accepts it, it signs fast, and keys and
    certificates stay small, which matters in 1 MiB Kubernetes Secrets.
    RSA remains for old Java and appliances that lack ECDSA.
    """

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"


class Profile(enum.StrEnum):
    """Validation profiles of :func:`airtrust.pki.verify.verify_server`."""

    STRICT = "strict"
    RELAXED = "relaxed"


class BundleFormat(enum.StrEnum):
    """What ``bundle build`` writes: a PEM file, a PKCS#12 or JKS truststore, or an
    OpenSSL hash directory (a folder of ``<subject hash>.N`` files)."""

    PEM = "pem"
    PKCS12 = "pkcs12"
    JKS = "jks"
    HASHDIR = "hashdir"
