"""The one exception tree of airtrust.

Every error a user can cause or meet carries a kebab-case ``reference`` (stable,
greppable, documented), a ``message`` saying what is wrong and a ``hint``
saying how to fix it. Only the CLI turns them into exit codes, so library code
raises and never prints or exits.

::

    AirtrustError
     +-- InputError            bad input or usage              exit 2
     |    +-- BundleError      a CA bundle cannot be built or read
     |    +-- PrivateKeyError  a private key cannot be read or written
     |    +-- CertificateError a certificate cannot be issued as asked
     |    +-- ConfigError      the config file is invalid
     |    +-- OutputExistsError  refusing to overwrite without --force
     +-- CheckFailed           a verification or doctor check failed   exit 1
     |    +-- VerificationFailed
     +-- Unreachable           a cluster, registry or endpoint cannot be reached  exit 3

A check that must not be ignored raises; it never returns ``False``.
"""

from __future__ import annotations


class AirtrustError(Exception):
    """Base of every error airtrust raises on purpose."""

    exit_code = 2
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

    exit_code = 2
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


class CheckFailed(AirtrustError):
    """A check ran and its answer is no."""

    exit_code = 1
    reference = "check-failed"


class VerificationFailed(CheckFailed):
    """Path validation rejected a certificate; ``reason`` is a closed-set code."""

    reference = "verification-failed"

    def __init__(self, message: str, *, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint, reference=f"verify-{reason}")
        self.reason = reason


class Unreachable(AirtrustError):
    """A server or cluster did not answer; retrying later may help."""

    exit_code = 3
    reference = "unreachable"
