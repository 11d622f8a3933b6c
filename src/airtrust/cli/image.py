"""``airtrust image``: patch, inspect and Dockerfile for images that must trust the CA."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airtrust.cli.output import Format, emit, rows_table, warn
from airtrust.cli.params import OutputOpt
from airtrust.clock import utc_now
from airtrust.errors import CheckFailed, InputError

__all__ = [
    "CaOpt",
    "InsecureOpt",
    "PasswordEnvOpt",
    "RegistryCaOpt",
    "UserOpt",
    "dockerfile_cmd",
    "image_app",
    "inspect_cmd",
    "patch_cmd",
    "register",
]

if TYPE_CHECKING:
    from cryptography import x509

    from airtrust.registry.append import Progress
    from airtrust.registry.client import RegistryClient
    from airtrust.registry.reference import Reference

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
    from airtrust.files import read_input
    from airtrust.pki.bundle import parse_bundle

    if not files:
        raise InputError("no --ca given", hint="pass --ca ca-bundle.pem")
    bundle = parse_bundle([(f, read_input(f)) for f in files], now=utc_now())
    return list(bundle.certificates)


def _client(
    registry: str,
    registry_ca: Path | None,
    insecure: bool,
    username: str | None,
    password_env: str | None,
) -> "RegistryClient":
    from airtrust.files import read_secret
    from airtrust.registry.client import Credentials, RegistryClient

    credentials = None
    if username is not None:
        password = read_secret(env=password_env) if password_env else None
        if password is None:
            raise InputError("--username needs --password-env VAR", hint="export the password")
        credentials = Credentials(username, password.decode())
    return RegistryClient(
        registry, ca_bundle=registry_ca, insecure=insecure, credentials=credentials
    )


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
    platform: Annotated[
        str, typer.Option("--platform", help="all, or os/arch[,os/arch...] to patch.")
    ] = "all",
    sidecars: Annotated[
        bool, typer.Option("--sidecars", help="Patch the profile's S3 and Git sidecar images.")
    ] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="With --sidecars: the local mirror registry.")
    ] = None,
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Add ONE layer that makes the image trust the CA; push it under --to.

    Daemonless: reads the base layers from the registry, never unpacks them.
    """
    from airtrust.registry.append import Patcher

    cas = _cas(ca)
    jobs = _jobs(source, to, sidecars, registry, cas)
    results = []
    for src, dest in jobs:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(
                _client(src.registry, registry_ca, insecure, username, password_env)
            )
            target = None
            if dest.registry != src.registry:  # read from one registry, push to another
                target = stack.enter_context(
                    _client(dest.registry, registry_ca, insecure, username, password_env)
                )
            progress = stack.enter_context(_progress_bars())
            patcher = Patcher(client, cas, progress=progress, target=target)
            chosen = () if platform == "all" else tuple(p.strip() for p in platform.split(","))
            results.append(patcher.patch(src, dest, platforms=chosen))
    for r in results:
        for w in r.warnings:
            warn(w)
    data: dict[str, Any] = {"results": [r.to_dict() for r in results]}
    if sidecars:
        data["references"] = {
            _source_repo(r.source): f"{r.destination.split('@')[0]}" for r in results
        }

    def table(console: Any) -> None:
        rows = []
        for r in results:
            for p in r.platforms:
                rows.append(
                    (
                        r.destination,
                        p.platform or "-",
                        p.action,
                        p.layout,
                        p.result_digest[:19],
                        str(p.layer_size),
                    )
                )
        console.print(
            rows_table(
                "image patch",
                ["image", "platform", "action", "trust store", "digest", "layer bytes"],
                rows,
            )
        )
        for r in results:
            console.print(
                f"{r.destination}@{r.result_digest} "
                f"({'no-op' if r.noop else f'{r.bytes_uploaded} bytes uploaded'})",
                markup=False,
                soft_wrap=True,
            )
        if sidecars:
            console.print("images.references for airtrust.yaml:")
            for key, value in data["references"].items():
                console.print(f"  {key}: {value}", markup=False, soft_wrap=True)

    emit(data, output, table=table)


def _source_repo(reference: str) -> str:
    from airtrust.profiles import load_profile

    for sidecar in load_profile().sidecars:
        if sidecar.repository.rsplit("/", 1)[-1] in reference:
            return sidecar.repository
    return reference


def _jobs(
    source: str | None,
    to: str | None,
    sidecars: bool,
    registry: str | None,
    cas: "list[x509.Certificate]",
) -> "list[tuple[Reference, Reference]]":
    if sidecars:
        from airtrust.pki.bundle import fingerprint
        from airtrust.profiles import load_profile  # pydantic: only when needed

        if registry is None or source is not None:
            raise InputError(
                "--sidecars takes --registry REG and no image argument",
                hint="e.g. airtrust image patch --sidecars --registry reg.local:5000",
            )
        suffix = "airtrust-" + sorted(fingerprint(c) for c in cas)[0][:12]
        jobs = []
        for sidecar in load_profile().sidecars:
            path = sidecar.repository.split("/", 1)[1]
            src = _ref(f"{registry}/{path}:{sidecar.tag}")
            jobs.append((src, src.with_tag(f"{sidecar.tag}-{suffix}")))
        return jobs
    if source is None or to is None:
        raise InputError(
            "give the image and --to DEST", hint="airtrust image patch SRC --ca F --to DEST"
        )
    return [(_ref(source), _ref(to))]


@image_app.command("inspect")
def inspect_cmd(
    reference: Annotated[str, typer.Argument(help="Image (REGISTRY/REPO:TAG).")],
    ca: CaOpt = [],  # noqa: B006
    registry_ca: RegistryCaOpt = None,
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_env: PasswordEnvOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Whether the image's effective trust store contains every CA (exit 1 if not)."""
    from airtrust.registry.append import inspect_image

    cas = _cas(ca)
    ref = _ref(reference)
    with _client(ref.registry, registry_ca, insecure, username, password_env) as client:
        reports = inspect_image(client, ref, cas)
    data = {
        "image": reference,
        "trusted": all(r.trusted for r in reports),
        "platforms": [
            {
                "platform": r.platform,
                "digest": r.digest,
                "trusted": r.trusted,
                "family": r.layout.family,
                "bundles": r.bundles,
                "anchors": r.anchors,
                "user": r.user,
                "entrypoint": r.entrypoint,
                "patched_by_airtrust": r.labelled,
            }
            for r in reports
        ],
    }

    def table(console: Any) -> None:
        rows = [
            (
                r.platform,
                "yes" if r.trusted else "NO",
                r.layout.family,
                ", ".join(f"{k}: {'ok' if v else 'missing CA'}" for k, v in r.bundles.items())
                or "no bundle",
                r.user or "(root)",
            )
            for r in reports
        ]
        console.print(
            rows_table(reference, ["platform", "trusts CA", "distro", "bundles", "user"], rows)
        )

    emit(data, output, table=table)
    if not data["trusted"]:
        raise CheckFailed(
            f"{reference} does not trust every CA of the bundle",
            hint=f"airtrust image patch {reference} --ca ... --to ...",
            reference="image-untrusted",
        )


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
    from airtrust.files import OutputSet
    from airtrust.layers.dockerfile import build_context
    from airtrust.registry.append import base_layout

    cas = _cas(ca)
    ref = _ref(source)
    with _client(ref.registry, registry_ca, insecure, username, password_env) as client:
        layout, fs, config = base_layout(client, ref)
    context = build_context(source, layout, fs, config, cas)
    outputs = OutputSet(force=force)
    for name, data in context.files.items():
        outputs.add(out / name, data)
    written = outputs.commit()
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


def _revision() -> str:
    """The commit airtrust was built from, when it runs from a checkout; else unknown."""
    import subprocess

    here = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


@image_app.command("build-controller")
def build_controller_cmd(
    base: Annotated[str, typer.Option("--base", help="Base image with Python >= 3.11.")],
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
    """The airtrust controller image (entrypoint 'airtrust sync'), built without Docker."""
    from importlib.metadata import version

    from airtrust.registry.build import build_controller

    src = _ref(base)
    labels = {
        "org.opencontainers.image.title": "airtrust",
        "org.opencontainers.image.version": version("airtrust"),
        "org.opencontainers.image.revision": _revision(),
        "org.opencontainers.image.source": "airtrust",
        "org.opencontainers.image.base.name": str(src),
    }
    with _client(src.registry, registry_ca, insecure, username, password_env) as client:
        if to.startswith("oci:"):
            result = build_controller(
                client, src, wheels, labels=labels, layout=Path(to.removeprefix("oci:"))
            )
        else:
            dest = _ref(to)
            if dest.registry == src.registry:
                result = build_controller(client, src, wheels, labels=labels, to=dest)
            else:
                with _client(
                    dest.registry, registry_ca, insecure, username, password_env
                ) as target:
                    result = build_controller(
                        client, src, wheels, labels=labels, to=dest, target=target
                    )
    _show_build(result.to_dict(), output)


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
    from airtrust.registry.build import push_layout

    if not layout.startswith("oci:"):
        raise InputError(f"{layout} is not oci:FILE", hint="e.g. oci:airtrust-controller.tar")
    dest = _ref(to)
    with _client(dest.registry, registry_ca, insecure, username, password_env) as client:
        result = push_layout(Path(layout.removeprefix("oci:")), client, dest)
    _show_build(result.to_dict(), output)


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
