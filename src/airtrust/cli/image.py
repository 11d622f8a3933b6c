"""``airtrust image``: patch, inspect and Dockerfile for images that must trust the CA."""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airtrust.cli.output import Format, emit, rows_table, warn
from airtrust.cli.params import OutputOpt, StorePasswordOpt, read_bundle, store_password
from airtrust.errors import CheckFailed, InputError

__all__ = [
    "CaOpt",
    "InsecureOpt",
    "PasswordEnvOpt",
    "RegistryCaOpt",
    "StorePasswordOpt",
    "UserOpt",
    "dockerfile_cmd",
    "image_app",
    "inspect_cmd",
    "patch_cmd",
    "register",
]

if TYPE_CHECKING:
    from cryptography import x509

    from airtrust.layers.runtime import ClientTrust
    from airtrust.registry.append import Progress
    from airtrust.registry.reference import Reference
    from airtrust.usecases.patching import RegistryAccess

image_app = typer.Typer(
    help="Make container images trust the CA, in the registry.", no_args_is_help=True
)

CaOpt = Annotated[list[str], typer.Option("--ca", help="CA bundle file(s) the image must trust.")]
RegistryCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry-ca",
        help="CA bundle to verify the registry's TLS (default: the host's trust store).",
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Allow plain HTTP / unverified TLS to the registry.")
]
UserOpt = Annotated[str | None, typer.Option("--username", help="Registry user.")]
PasswordEnvOpt = Annotated[
    str | None,
    typer.Option("--password-env", metavar="VAR", help="Registry password from $VAR."),
]


def _cas(files: list[str]) -> "list[x509.Certificate]":
    """The CAs of --ca, checked before anything talks to a registry."""
    if not files:
        raise InputError("no --ca given", hint="pass --ca ca-bundle.pem")
    return list(read_bundle(files).certificates)


def _access(
    registry_ca: Path | None, insecure: bool, username: str | None, password_env: str | None
) -> "RegistryAccess":
    from airtrust.usecases.patching import RegistryAccess

    return RegistryAccess.of(registry_ca, insecure, username, password_env)


def _ref(text: str) -> "Reference":
    from airtrust.registry.reference import parse_reference

    return parse_reference(text)


@contextlib.contextmanager
def _progress_bars() -> Iterator["Progress | None"]:
    """Byte bars on stderr for layer reads and pushes; none when quiet or not a terminal."""
    import sys

    from airtrust.cli.output import settings

    if settings.quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True, no_color=not settings.color),
        transient=False,
    )

    class Bars:
        def transfer(self, label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(label, total=total or None)
            return lambda n: bars.advance(task, n)

    with bars:
        yield Bars()


@image_app.command("patch")
def patch_cmd(
    source: Annotated[
        str | None, typer.Argument(help="Image to patch (REGISTRY/REPO:TAG).")
    ] = None,
    ca: CaOpt = [],  # noqa: B006 - typer reads the default
    to: Annotated[str | None, typer.Option("--to", help="Where to push the result.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Patch many images at once: one 'SRC DEST' per line ('#' comments).",
        ),
    ] = None,
    platform: Annotated[
        str, typer.Option("--platform", help="all, or os/arch[,os/arch...] to patch.")
    ] = "all",
    sidecars: Annotated[
        bool, typer.Option("--sidecars", help="Patch the profile's S3 and Git sidecar images.")
    ] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="With --sidecars: the local mirror registry.")
    ] = None,
    no_env: Annotated[
        bool,
        typer.Option(
            "--no-env",
            help="Leave the image config alone (no SSL_CERT_FILE, REQUESTS_CA_BUNDLE, ...).",
        ),
    ] = False,
    store_password_env: StorePasswordOpt = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="With --from: images patched at once.")
    ] = 4,
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Add ONE layer that makes the image trust the CA; push it under --to.

    Daemonless: reads the base layers from the registry, never unpacks them. The
    layer patches the OS bundle and every runtime store found (certifi, pip,
    botocore, grpcio, conda, Java cacerts); the config gets the variables that
    point later installs at the patched bundle, never overriding one it sets.
    """
    from airtrust.usecases import patching

    cas = _cas(ca)
    password = store_password(store_password_env)
    if from_file is not None:
        if source is not None or to is not None or sidecars:
            raise InputError(
                "--from FILE takes no image argument, --to or --sidecars",
                hint="put each 'SRC DEST' pair in the file",
            )
        pairs = patching.jobs_from_file(from_file)
    elif sidecars:
        from airtrust.profiles import load_profile  # pydantic: only when needed

        if registry is None or source is not None:
            raise InputError(
                "--sidecars takes --registry REG and no image argument",
                hint="e.g. airtrust image patch --sidecars --registry reg.local:5000",
            )
        pairs = patching.sidecar_jobs(registry, cas, load_profile())
    elif source is None or to is None:
        raise InputError(
            "give the image and --to DEST", hint="airtrust image patch SRC --ca F --to DEST"
        )
    else:
        pairs = [(_ref(source), _ref(to))]
    request = patching.PatchRequest(
        tuple(cas),
        _access(registry_ca, insecure, username, password_env),
        platforms=() if platform == "all" else tuple(p.strip() for p in platform.split(",")),
        set_env=not no_env,
        store_password=password,
    )
    with _progress_bars() as progress:
        results, failed = patching.patch_images(
            pairs, request, progress=progress, parallel=jobs, keep_going=from_file is not None
        )
    failures = [f.to_dict() for f in failed]
    for r in results:
        for w in r.warnings:
            warn(f"{r.destination}: {w}" if from_file is not None else w)
    data: dict[str, Any] = {"results": [r.to_dict() for r in results]}
    if from_file is not None:
        data["failures"] = failures
    if sidecars:
        from airtrust.profiles import load_profile

        data["references"] = patching.sidecar_references(results, load_profile())

    def table(console: Any) -> None:
        rows = []
        for r in results:
            for p in r.platforms:
                rows.append(
                    (
                        r.destination,
                        p.platform or "-",
                        str(p.action),
                        p.layout,
                        p.result_digest[:19],
                        str(p.layer_size),
                    )
                )
        for f in failures:
            rows.append((f["destination"], "-", "FAILED", f["error"], "-", "-"))
        console.print(
            rows_table(
                "image patch",
                ["image", "platform", "action", "trust store", "digest", "layer bytes"],
                rows,
            )
        )
        if from_file is None:
            for r in results:
                for p in r.platforms:
                    if p.clients:
                        console.print(_clients_table(f"{r.destination} {p.platform}", p.clients))
        for r in results:
            console.print(
                f"{r.destination}@{r.result_digest} "
                f"({'no-op' if r.noop else f'{r.bytes_uploaded} bytes uploaded'})",
                markup=False,
                soft_wrap=True,
            )
        if from_file is not None:
            console.print(
                f"{len(results)} patched, {len(failures)} failed of {len(pairs)} images",
                markup=False,
            )
        if sidecars:
            console.print("images.references for airtrust.yaml:")
            for key, value in data["references"].items():
                console.print(f"  {key}: {value}", markup=False, soft_wrap=True)

    emit(data, output, table=table)
    if failures:
        first = failures[0]
        raise CheckFailed(
            f"{len(failures)} of {len(pairs)} images failed; first: {first['source']}: "
            f"{first['error']}",
            hint="fix those and rerun with the same --from file (patched images are no-ops)",
            reference="image-patch-failed",
        )


def _clients_table(title: str, clients: "Sequence[ClientTrust]") -> Any:
    return rows_table(
        title,
        ["client", "file or variable", "status", "detail"],
        [(c.client, c.where, str(c.status), c.detail) for c in clients],
    )


@image_app.command("inspect")
def inspect_cmd(
    reference: Annotated[str, typer.Argument(help="Image (REGISTRY/REPO:TAG).")],
    ca: CaOpt = [],  # noqa: B006
    store_password_env: StorePasswordOpt = None,
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Per client (OS bundle, certifi, pip, botocore, grpcio, conda, Java, Node, each
    variable): does the store it reads hold every CA? Exit 1 if any does not."""
    from airtrust.layers.runtime import TrustStatus
    from airtrust.usecases.image_trust import inspect_image

    cas = _cas(ca)
    ref = _ref(reference)
    access = _access(registry_ca, insecure, username, password_env)
    reports = inspect_image(access, ref, cas, store_password=store_password(store_password_env))
    data = {
        "image": reference,
        "trusted": all(r.trusted for r in reports),
        "platforms": [r.to_dict() for r in reports],
    }

    def table(console: Any) -> None:
        for r in reports:
            title = f"{reference} {r.platform} ({r.layout.family}, user {r.user or 'root'})"
            console.print(_clients_table(title, r.clients))

    emit(data, output, table=table)
    if not data["trusted"]:
        bad = [
            f"{c.client} ({c.where}: {c.status})"
            for r in reports
            for c in r.clients
            if c.status is not TrustStatus.OK
        ]
        raise CheckFailed(
            f"{reference}: {len(bad)} client store(s) lack the CA: {'; '.join(bad[:3])}"
            + (" ..." if len(bad) > 3 else ""),
            hint=_patch_command(ref, ca, registry_ca, insecure),
            reference="image-untrusted",
        )


def _patch_command(
    ref: "Reference", ca: list[str], registry_ca: Path | None, insecure: bool
) -> str:
    """The patch that fixes what inspect found, runnable as printed: the same CA files,
    the same registry CA, into the same repository under the tag ``TAG-airtrust``."""
    import shlex

    from airtrust.cli.output import invoked_as

    dest = ref.with_tag(f"{ref.tag or 'latest'}-airtrust")
    argv = ["image", "patch", str(ref), *(a for f in ca for a in ("--ca", f))]
    argv += ["--to", str(dest)]
    if registry_ca is not None:
        argv += ["--registry-ca", str(registry_ca)]
    if insecure:
        argv.append("--insecure")
    return f"patch it: {invoked_as()} {shlex.join(argv)}"


@image_app.command("dockerfile")
def dockerfile_cmd(
    source: Annotated[str, typer.Argument(help="Base image (REGISTRY/REPO:TAG).")],
    ca: CaOpt = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Build context folder to write.")] = Path("."),
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite.")] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Write a build context (Dockerfile + anchors/) adapted to the base's distro."""
    from airtrust.usecases.image_trust import write_build_context

    cas = _cas(ca)
    access = _access(registry_ca, insecure, username, password_env)
    result = write_build_context(access, source, _ref(source), cas, out, force=force)
    context, written = result.context, result.files
    for w in context.warnings:
        warn(w)
    emit(
        {
            "out": str(out),
            "files": [str(p) for p in written],
            "method": context.method,
            "why": context.why,
            "warnings": context.warnings,
        },
        output,
        table=lambda c: c.print(
            f"wrote {len(written)} files to {out} ({context.method}: {context.why})",
            markup=False,
            soft_wrap=True,
        ),
    )


@image_app.command("build-controller")
def build_image_cmd(
    base: Annotated[
        str, typer.Option("--base", help="Base image with Python >= 3.11, or oci:FILE.")
    ],
    to: Annotated[str, typer.Option("--to", help="REGISTRY/REPO:TAG, or oci:FILE (a tarball).")],
    wheels: Annotated[
        Path,
        typer.Option("--wheels", help="The wheels/ folder of an offline bundle (scripts/release)."),
    ],
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """The airtrust image (entrypoint 'airtrust sync'), built without Docker; --base and
    --to take oci:FILE (an OCI layout tarball) as well as a registry reference."""
    from airtrust.usecases.own_image import build_own_image

    access = _access(registry_ca, insecure, username, password_env)
    _show_build(build_own_image(access, base, to, wheels).to_dict(), output)


@image_app.command("push")
def push_cmd(
    layout: Annotated[str, typer.Argument(help="oci:FILE written by build-controller --to oci:")],
    to: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG")],
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Push an OCI layout tarball to a registry (the other side of the air gap)."""
    from airtrust.usecases.own_image import push_own_image

    access = _access(registry_ca, insecure, username, password_env)
    _show_build(push_own_image(access, layout, to).to_dict(), output)


def _show_build(data: dict[str, Any], output: Format) -> None:
    def table(console: Any) -> None:
        console.print(
            f"{data['destination']}@{data['digest']} ({data['blobs_uploaded']} blob(s), "
            f"{data['bytes_uploaded']} bytes uploaded)",
            markup=False,
            soft_wrap=True,
        )
        for p in data["platforms"]:
            console.print(f"{p['platform']}: {p['digest']}", markup=False, soft_wrap=True)

    emit(data, output, table=table)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
