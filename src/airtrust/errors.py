"""The one exception tree of airtrust.

Every error a user can cause or meet carries a kebab-case ``reference`` (stable,
greppable, documented), a ``message`` saying what is wrong and a ``hint``
saying how to fix it. Only the CLI turns them into exit codes, so library code
raises and never prints or exits.

::

    AirtrustError
     +-- InputError              bad input or usage; nothing was changed      exit 2
     |    +-- BundleError        a CA bundle cannot be built or read
     |    +-- PrivateKeyError    a private key cannot be read or written
     |    +-- CertificateError   a certificate cannot be issued as asked
     |    +-- ConfigError        the config file is invalid
     |    +-- OutputExistsError  refusing to overwrite without --force
     |    +-- OutputIsFolder     a file output names a folder (never replaced, even with --force)
     |    +-- OutputNotAFolder   an output folder (or a parent of an output) is a file
     |    +-- ImageNotFound      the image reference names nothing in the registry
     |    +-- KeystoreError      a Java store cannot be read (format, password)
     |    +-- StalePlan          apply FILE: the cluster changed since plan --out FILE
     |    +-- NodeTrustError     a runtime's trust cannot be written as asked (registry
     |                           name, runtime, containerd config without config_path)
     |    +-- WebhookUrlError    render --inject --url: not where the webhook mutates
     +-- CheckFailed             a verification or check answered no          exit 1
     |    +-- VerificationFailed path validation rejected a certificate
     |    +-- Conflict           server-side apply: fields owned by another manager
     |    +-- ApiFailure         the apiserver refused a request (not RBAC, not conflict)
     |    +-- ReleaseUnreadable  a Helm release Secret cannot be decoded
     +-- Unreachable             a cluster, registry or endpoint cannot be reached   exit 3
          +-- PermissionDenied   the context's credentials lack a right airtrust needs
          +-- RegistryError      the registry refused or failed a request

Exit codes live here and nowhere else (``EXIT_*``); the CLI reads them from
the error's class. A check that must not be ignored raises; it never returns
``False``.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CHANGES_PENDING",
    "EXIT_CHECK_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "AirtrustError",
    "ApiFailure",
    "BundleError",
    "CertificateError",
    "CheckFailed",
    "ConfigError",
    "Conflict",
    "ImageNotFound",
    "InputError",
    "KeystoreError",
    "NodeTrustError",
    "OutputExistsError",
    "OutputIsFolder",
    "OutputNotAFolder",
    "PermissionDenied",
    "PrivateKeyError",
    "RegistryError",
    "ReleaseUnreadable",
    "StalePlan",
    "Unreachable",
    "VerificationFailed",
    "WebhookUrlError",
]

EXIT_OK = 0
#: A check failed (verify rejected, doctor found a failure, apply left objects unapplied).
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
#: ``plan --exit-code``: changes are pending (terraform's -detailed-exitcode).
EXIT_CHANGES_PENDING = 4
#: A bug: an exception that is not an AirtrustError (sysexits' EX_SOFTWARE).
EXIT_INTERNAL = 70
#: Ctrl-C or an abort: 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


class AirtrustError(Exception):
    """Base of every error airtrust raises on purpose."""

    exit_code = EXIT_BAD_INPUT
    reference = "airtrust-error"

    def __init__(self, message: str, *, hint: str = "", reference: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reference is not None:
            self.reference = reference

    def one_line(self) -> str:
        """The single line a user sees: what is wrong, then how to fix it."""
        text = self.message.strip().rstrip(".")
        if self.hint:
            text += f"; {self.hint.strip().rstrip('.')}"
        return " ".join(f"{text} [{self.reference}]".split())


class InputError(AirtrustError):
    """The user gave something airtrust cannot use; nothing was changed."""

    exit_code = EXIT_BAD_INPUT
    reference = "bad-input"


class BundleError(InputError):
    reference = "bad-bundle"


class PrivateKeyError(InputError):
    reference = "bad-private-key"


class CertificateError(InputError):
    reference = "bad-certificate-request"


class ConfigError(InputError):
    reference = "bad-config"


class OutputExistsError(InputError):
    reference = "output-exists"


class OutputIsFolder(InputError):
    """``--force`` replaces files; a folder (and what a user keeps in it) is never deleted."""

    reference = "output-is-folder"


class OutputNotAFolder(InputError):
    reference = "output-not-a-folder"


class ImageNotFound(InputError):
    reference = "image-not-found"


class KeystoreError(InputError):
    """A Java store that cannot be read: another format, or not this password."""

    reference = "bad-keystore"


class NodeTrustError(InputError):
    """Node trust that cannot be written as asked: a registry that is not HOST[:PORT], no
    runtime under the root, a containerd that reads no hosts.toml."""

    reference = "node-trust"


class WebhookUrlError(InputError):
    """A webhook URL the apiserver would refuse (not https, a query, a fragment, user
    information) or that reaches the server where it does not mutate: under failurePolicy
    Ignore every admission would go through uninjected, and nobody would be told."""

    reference = "bad-webhook-url"


class StalePlan(InputError):
    """``apply FILE``: the clusters or the config changed since ``plan --out FILE``."""

    reference = "stale-plan"


class CheckFailed(AirtrustError):
    """A check ran and its answer is no."""

    exit_code = EXIT_CHECK_FAILED
    reference = "check-failed"


class VerificationFailed(CheckFailed):
    """Path validation rejected a certificate; ``reason`` is a closed-set code."""

    reference = "verification-failed"

    def __init__(self, message: str, *, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint, reference=f"verify-{reason}")
        self.reason = reason


class Unreachable(AirtrustError):
    """A server or cluster did not answer; retrying later may help."""

    exit_code = EXIT_UNREACHABLE
    reference = "unreachable"


class Conflict(CheckFailed):
    """Server-side apply found fields owned by another manager."""

    reference = "apply-conflict"

    def __init__(self, message: str, *, managers: tuple[str, ...], hint: str) -> None:
        super().__init__(message, hint=hint)
        self.managers = managers


class ApiFailure(CheckFailed):
    """The apiserver refused a request for a reason other than conflict or RBAC."""

    reference = "api-error"


class ReleaseUnreadable(CheckFailed):
    reference = "helm-release-unreadable"


class PermissionDenied(Unreachable):
    """The credentials of a context lack rights airtrust needs."""

    reference = "forbidden"


class RegistryError(Unreachable):
    """The registry refused or failed a request. Like go-containerregistry's transport
    error it keeps what the registry said: the HTTP status and the distribution error
    codes (``MANIFEST_UNKNOWN``, ``DENIED``, ...), and whether trying again may help."""

    reference = "registry-error"
    #: distribution-spec codes a retry may clear (go-containerregistry's list)
    TEMPORARY_CODES = frozenset(
        {"BLOB_UPLOAD_INVALID", "TOOMANYREQUESTS", "UNKNOWN", "UNAVAILABLE"}
    )
    TEMPORARY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        reference: str | None = None,
        status: int | None = None,
        codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint, reference=reference)
        self.status = status
        self.codes = codes

    @property
    def temporary(self) -> bool:
        return self.status in self.TEMPORARY_STATUSES or any(
            c in self.TEMPORARY_CODES for c in self.codes
        )
