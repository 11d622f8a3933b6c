"""``airtrust image patch``: which images, from which registries, patched how many at once.

One image, the profile's sidecars as mirrored in a local registry, or a
``--from`` file of ``SRC DEST`` pairs: each becomes a (source, destination)
job. Jobs are checked before any registry is touched, run ``jobs`` at a time,
and a failing image never stops the others. Reading from one registry and
pushing to another takes two clients; :class:`RegistryAccess` makes both with
the same TLS and credentials.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from airtrust.errors import AirtrustError, InputError
from airtrust.files import read_input, read_secret
from airtrust.pki.bundle import fingerprint
from airtrust.profiles import Profile
from airtrust.registry.append import Patcher, PatchResult, Progress
from airtrust.registry.client import Credentials, RegistryClient
from airtrust.registry.reference import Reference, parse_reference

__all__ = [
    "Job",
    "PatchFailure",
    "PatchRequest",
    "RegistryAccess",
    "jobs_from_file",
    "patch_images",
    "sidecar_jobs",
    "sidecar_references",
]

log = logging.getLogger(__name__)

#: (source, destination)
Job = tuple[Reference, Reference]


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach registries: the same CA, TLS choice and account for each."""

    ca_bundle: Path | None = None
    insecure: bool = False
    credentials: Credentials | None = None

    @classmethod
    def of(
        cls,
        ca_bundle: Path | None,
        insecure: bool,
        username: str | None,
        password_env: str | None,
    ) -> RegistryAccess:
        credentials = None
        if username is not None:
            password = read_secret(env=password_env) if password_env else None
            if password is None:
                raise InputError("--username needs --password-env VAR", hint="export the password")
            credentials = Credentials(username, password.decode())
        return cls(ca_bundle, insecure, credentials)

    def client(self, registry: str) -> RegistryClient:
        return RegistryClient(
            registry, ca_bundle=self.ca_bundle, insecure=self.insecure, credentials=self.credentials
        )

    @contextlib.contextmanager
    def clients(
        self, src: Reference, dest: Reference
    ) -> Iterator[tuple[RegistryClient, RegistryClient | None]]:
        """The source's client and, when the destination is another registry, its own."""
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(self.client(src.registry))
            target = None
            if dest.registry != src.registry:
                target = stack.enter_context(self.client(dest.registry))
            yield source, target


def jobs_from_file(path: Path) -> list[Job]:
    """The 'SRC DEST' lines of a --from file, all checked before any image is touched."""
    jobs = []
    text = read_input(str(path)).decode("utf-8", "replace")
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise InputError(
                f"{path}:{number}: expected 'SRC DEST', found {len(words)} word(s)",
                hint="one source and one destination image per line",
            )
        try:
            jobs.append((parse_reference(words[0]), parse_reference(words[1])))
        except InputError as exc:
            raise InputError(f"{path}:{number}: {exc.message}", hint=exc.hint) from None
    if not jobs:
        raise InputError(f"{path} lists no images", hint="write one 'SRC DEST' pair per line")
    return jobs


def sidecar_jobs(registry: str, cas: Sequence[x509.Certificate], profile: Profile) -> list[Job]:
    """The profile's sidecars as mirrored in ``registry``, each to a tag named by the CA
    (so a new CA gets new images and an unchanged one the same)."""
    suffix = "airtrust-" + sorted(fingerprint(c) for c in cas)[0][:12]
    jobs = []
    for sidecar in profile.sidecars:
        path = sidecar.repository.split("/", 1)[1]
        src = parse_reference(f"{registry}/{path}:{sidecar.tag}")
        jobs.append((src, src.with_tag(f"{sidecar.tag}-{suffix}")))
    return jobs


def sidecar_references(results: Sequence[PatchResult], profile: Profile) -> dict[str, str]:
    """``images.references`` for airtrust.yaml: the upstream repository -> the patched image."""

    def upstream(reference: str) -> str:
        for sidecar in profile.sidecars:
            if sidecar.repository.rsplit("/", 1)[-1] in reference:
                return sidecar.repository
        return reference

    return {upstream(r.source): r.destination.split("@")[0] for r in results}


@dataclass(frozen=True)
class PatchRequest:
    """What every job of one ``image patch`` shares."""

    cas: tuple[x509.Certificate, ...]
    access: RegistryAccess
    platforms: tuple[str, ...] = ()
    set_env: bool = True
    store_password: str = ""


@dataclass(frozen=True)
class PatchFailure:
    source: str
    destination: str
    error: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "destination": self.destination,
            "error": self.error,
            "hint": self.hint,
        }


def _patch_one(job: Job, request: PatchRequest, progress: Progress | None) -> PatchResult:
    src, dest = job
    with request.access.clients(src, dest) as (client, target):
        patcher = Patcher(
            client,
            list(request.cas),
            progress=progress,
            target=target,
            set_env=request.set_env,
            store_password=request.store_password,
        )
        return patcher.patch(src, dest, platforms=request.platforms)


def patch_images(
    jobs: Sequence[Job],
    request: PatchRequest,
    *,
    progress: Progress | None = None,
    parallel: int = 1,
    keep_going: bool = False,
) -> tuple[list[PatchResult], list[PatchFailure]]:
    """Every job patched, ``parallel`` at a time. With ``keep_going`` one failure never
    stops the others and is returned; without, the first error is raised."""
    if not keep_going:
        return [_patch_one(job, request, progress) for job in jobs], []

    def attempt(job: Job) -> PatchResult | PatchFailure:
        src, dest = job
        try:
            return _patch_one(job, request, progress)
        except AirtrustError as exc:
            error, hint = exc.message, exc.hint
        except Exception as exc:  # a bug in one image's patch must not lose the others
            log.debug("patch of %s failed", src, exc_info=True)
            error, hint = f"internal error ({type(exc).__name__})", "rerun with --debug"
        return PatchFailure(str(src), str(dest), error, hint)

    workers = max(1, min(parallel, len(jobs)))
    with ThreadPoolExecutor(workers, thread_name_prefix="patch") as pool:
        outcomes = list(pool.map(attempt, jobs))
    results = [o for o in outcomes if isinstance(o, PatchResult)]
    failures = [o for o in outcomes if isinstance(o, PatchFailure)]
    return results, failures
